"""Progress lines reach the Dagster run's event log, batched when they come fast, never dropped."""

import time

from dagster import AssetExecutionContext, DagsterInstance, asset, materialize

from assets.progress import progress_log


def test_fast_lines_are_batched_slow_ones_go_out_at_once_and_none_is_lost(tmp_path, monkeypatch):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    (tmp_path / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")

    @asset
    def staged(context: AssetExecutionContext) -> None:
        with progress_log(context, every_s=0.5) as progress:
            for i in range(40):  # a burst at the start: every line waits for the next event
                progress(f"line {i}")
            time.sleep(0.6)
            progress("after a pause")  # the stage's start is old enough: out at once, with the burst
            progress("last line")
            raise RuntimeError("the stage fails")  # pending lines are still written

    with DagsterInstance.get() as instance:
        result = materialize([staged], instance=instance, raise_on_error=False)
        assert not result.success
        msgs = [e.user_message for e in instance.all_logs(result.run_id)
                if e.user_message.startswith(("line", "after", "last"))]
    lines = [line for m in msgs for line in m.split("\n")]
    assert lines == [f"line {i}" for i in range(40)] + ["after a pause", "last line"]  # all, in order
    # the burst goes out with the first line after the pause, the last line when the stage ends
    assert msgs[0].split("\n") == [f"line {i}" for i in range(40)] + ["after a pause"] and msgs[1:] == ["last line"]
