"""From token stores to the training stream: schedules and baselines, the plan, the mixed shards."""
