"""The generic shard runner: stats files, skipping finished shards, failures, progress, task and actor modes."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass

import pytest
from avtok.model.files import atomic_write_bytes
from avtok.pipeline.runner import ShardJob, ShardStats, run_shards, stats_path_for


@dataclass
class SumStats(ShardStats):
    rows: int = 0
    calls: int = 0


def write_sum(job: ShardJob, report, scale: int = 1) -> SumStats:
    """A shard function: writes the scaled sum of its payload; raises on a negative number."""
    if any(x < 0 for x in job.payload):
        raise ValueError(f"negative input in shard {job.index}")
    for _ in job.payload:
        report(rows=1)
    atomic_write_bytes(job.output, str(scale * sum(job.payload)).encode())
    return SumStats(rows=len(job.payload))


class Summer:
    """An actor-mode worker holding state (as a tokenizer would)."""

    def __init__(self, scale: int):
        self.scale = scale
        self.calls = 0

    def run_shard(self, job: ShardJob, report) -> SumStats:
        self.calls += 1
        stats = write_sum(job, report, self.scale)
        stats.calls = self.calls
        return stats


def _jobs(tmp_path, payloads):
    return [ShardJob(n, p, tmp_path / f"part-{n:06d}.txt") for n, p in enumerate(payloads)]


def test_stats_path():
    assert stats_path_for("/a/shard-000003.tar").as_posix() == "/a/shard-000003.stats.json"
    assert stats_path_for("tokens-000001.parquet").name == "tokens-000001.stats.json"


def test_in_process_run_skip_and_failure(tmp_path):
    events = []
    jobs = _jobs(tmp_path, [[1, 2], [3], [-1]])
    res = run_shards(jobs, SumStats, write_sum, fn_kwargs={"scale": 10}, in_process=True, progress=events.append)
    assert [s.shard for s in res.done] == [0, 1]
    assert res.failed == [(2, "ValueError: negative input in shard 2")]
    assert (tmp_path / "part-000000.txt").read_text() == "30"
    stats = json.loads((tmp_path / "part-000001.stats.json").read_text())
    assert stats["rows"] == 1 and stats["shard"] == 1 and stats["output"] == "part-000001.txt"
    assert not (tmp_path / "part-000002.stats.json").exists()
    assert sum(e.rows for e in events) == 3 and [e.shard for e in events if e.failed] == [2]
    # re-run: finished shards skipped, the failed one retried (now fixed)
    jobs[2].payload = [5]
    res = run_shards(jobs, SumStats, write_sum, fn_kwargs={"scale": 10}, in_process=True)
    assert [s.shard for s in res.skipped] == [0, 1] and [s.shard for s in res.done] == [2]
    assert [s.shard for s in res.all_stats] == [0, 1, 2]


def test_in_process_actor_mode(tmp_path):
    res = run_shards(_jobs(tmp_path, [[1], [2], [3]]), stats_cls=SumStats, actor_cls=Summer, actor_args=(2,), in_process=True)
    assert [s.calls for s in res.done] == [1, 2, 3]  # one instance kept its state
    assert (tmp_path / "part-000002.txt").read_text() == "6"


def test_needs_exactly_one_callable(tmp_path):
    with pytest.raises(ValueError, match="exactly one"):
        run_shards(_jobs(tmp_path, [[1]]), in_process=True)


@pytest.mark.slow
def test_ray_tasks_and_actors(tmp_path):
    import ray

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # tests/ is not importable by workers
    try:
        a, b = tmp_path / "a", tmp_path / "b"
        a.mkdir()
        b.mkdir()
        events = []
        res = run_shards(_jobs(a, [[1, 2], [3], [-1], [4]]), SumStats, write_sum, fn_kwargs={"scale": 3}, workers=2,
                         max_retries=1, progress=events.append, shutdown=False)
        assert sorted(s.shard for s in res.done) == [0, 1, 3]
        assert [i for i, _ in res.failed] == [2] and "negative input in shard 2" in res.failed[0][1]
        assert (a / "part-000003.txt").read_text() == "12"
        assert sum(e.rows for e in events) == 4 and res.ray_start_s > 0
        res = run_shards(_jobs(b, [[1], [2], [3], [4]]), stats_cls=SumStats, actor_cls=Summer, actor_args=(1,), workers=2,
                         num_cpus=1, shutdown=False)
        assert sorted(s.shard for s in res.done) == [0, 1, 2, 3]
        assert sorted(s.calls for s in res.done) in ([1, 1, 2, 2], [1, 2, 3, 4], [1, 1, 2, 3])
        assert res.ray_start_s == 0.0  # reused the running Ray
    finally:
        ray.shutdown()


def test_stale_and_old_stats_are_redone(tmp_path):
    jobs = _jobs(tmp_path, [[1], [2], [3]])
    for job in jobs:
        job.input_sha256 = "aaa"
    run_shards(jobs, SumStats, write_sum, in_process=True)
    jobs[1].input_sha256 = "bbb"  # shard 1's input changed
    (tmp_path / "part-000002.stats.json").write_text(json.dumps({"shard": 2}))  # another version's stats
    res = run_shards(jobs, SumStats, write_sum, in_process=True)
    assert res.stale == [1] and [s.shard for s in res.done] == [1, 2] and [s.shard for s in res.skipped] == [0]
    assert json.loads((tmp_path / "part-000001.stats.json").read_text())["input_sha256"] == "bbb"
