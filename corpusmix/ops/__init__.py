"""Reading a build after the fact: checks, verification, freshness, audits, reports, the demo corpus."""
