"""Spark MLlib ALS baseline for ``bench_als.py``, in a subprocess of its own.

The parent (:func:`measure_spark`) starts this file as a script and polls the resident memory of
the child's process tree (the Python driver and its JVM) every 0.25 s, so Spark's memory is
measured alone and nothing of Spark stays resident after it. The child (:func:`run_spark`) reads
the benchmark's parquet, sums duplicate (user, item) pairs as implicit's ``sum_duplicates`` does,
caches that table (its load is reported apart), then fits
``pyspark.ml.recommendation.ALS(implicitPrefs=True)`` twice, with ``maxIter=A`` and ``maxIter=B``.
Per iteration is ``(t_B - t_A) / (B - A)``: each fit's setup (rating blocks, in/out links, the
final factor count) is the same in both and cancels out. The ``A`` fit runs first, so JVM
warm-up falls in ``t_A`` and, if anything, makes Spark's figure smaller.

Spark's objective differs from implicit's in convention (``c = 1 + alpha * r``; ``regParam``
scaled by each row's count): the figures compare time, not factors.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def unavailable() -> str | None:
    """Why Spark cannot run here (a message for the table), or None."""
    if importlib.util.find_spec("pyspark") is None:
        return "pyspark is not installed (pip install 'daskml-scale[bench]', or pyspark>=3.5)"
    java_home = os.environ.get("JAVA_HOME")
    if not (java_home and Path(java_home, "bin", "java").exists()) and shutil.which("java") is None:
        return "no Java runtime found (install a JDK 17+ or set JAVA_HOME)"
    return None


def _tree(proc):
    import psutil

    try:
        return [proc, *proc.children(recursive=True)]
    except psutil.Error:
        return []


def _hwm_mib(proc) -> float:
    """The kernel's own peak resident set (VmHWM) of one process, MiB; 0 where unreadable."""
    try:
        for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return 0.0


def measure_spark(path, *, rank, iterations, reg, alpha, seed, driver_memory, timeout_s=7200) -> dict:
    """Run :func:`run_spark` in a child process; add the peak RSS of its process tree.

    Returns the child's JSON plus ``tree_peak_rss_mib`` (largest sum of the tree's RSS seen by
    0.25 s polling) and ``jvm_peak_rss_mib`` (the JVM's VmHWM, read just before it exits). Raises
    ``RuntimeError`` with the tail of the child's stderr when it fails.
    """
    import psutil

    a, b = iterations
    cmd = [sys.executable, __file__, str(path), "--rank", str(rank), "--iterations", f"{a},{b}",
           "--reg", str(reg), "--alpha", str(alpha), "--seed", str(seed),
           "--driver-memory", driver_memory]  # fmt: skip
    env = dict(os.environ, PYSPARK_PYTHON=sys.executable, PYSPARK_DRIVER_PYTHON=sys.executable)
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        child = subprocess.Popen(cmd, stdout=out, stderr=err, text=True, env=env)
        root = psutil.Process(child.pid)
        peak, jvm_hwm, t0 = 0.0, {}, time.perf_counter()
        while child.poll() is None:
            procs = _tree(root)
            rss = 0
            for p in procs:
                try:
                    rss += p.memory_info().rss
                    if p.name() == "java":
                        jvm_hwm[p.pid] = max(jvm_hwm.get(p.pid, 0.0), _hwm_mib(p))
                except psutil.Error:
                    pass
            peak = max(peak, rss / 2**20)
            if time.perf_counter() - t0 > timeout_s:
                for p in reversed(procs):  # the child's own tree only
                    try:
                        p.kill()
                    except psutil.Error:
                        pass
                raise RuntimeError(f"Spark ALS did not finish in {timeout_s} s: killed")
            time.sleep(0.25)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if child.returncode != 0 or not stdout.strip():
        tail = "\n".join(stderr.strip().splitlines()[-25:])
        print(tail, file=sys.stderr)
        raise RuntimeError(f"Spark ALS failed (exit {child.returncode}): {tail.splitlines()[-1:]}")
    res = json.loads(stdout.strip().splitlines()[-1])
    res["tree_peak_rss_mib"] = peak
    res["jvm_peak_rss_mib"] = max(jvm_hwm.values(), default=0.0)
    return res


def run_spark(path, rank, iterations, reg, alpha, seed, driver_memory) -> dict:
    """Spark MLlib ALS, ``local[2]``, in this process (the child): see the module docstring."""
    import pyspark
    from pyspark import StorageLevel
    from pyspark.ml.recommendation import ALS
    from pyspark.sql import SparkSession
    from pyspark.sql import functions as F

    a, b = iterations
    t = time.perf_counter()
    spark = (
        SparkSession.builder.master("local[2]")
        .appName("bench_als")
        .config("spark.driver.memory", driver_memory)
        .config("spark.ui.enabled", "false")
        .config("spark.sql.shuffle.partitions", "8")
        # the generated table has a nanosecond timestamp column (not read here), which Spark refuses
        .config("spark.sql.legacy.parquet.nanosAsLong", "true")
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")
    start_s = time.perf_counter() - t
    try:
        t = time.perf_counter()
        raw = spark.read.parquet(str(path)).select(
            F.col("user_id").cast("int").alias("user_id"),
            F.col("item_id").cast("int").alias("item_id"),
            F.col("weight").cast("float").alias("weight"),
        )
        ratings = raw.groupBy("user_id", "item_id").agg(F.sum("weight").alias("weight"))
        ratings = ratings.persist(StorageLevel.MEMORY_AND_DISK)
        pairs = ratings.count()
        load_s = time.perf_counter() - t

        fits = {}
        for n_iter in (a, b):
            als = ALS(rank=rank, maxIter=n_iter, regParam=reg, alpha=alpha, implicitPrefs=True,
                      userCol="user_id", itemCol="item_id", ratingCol="weight", coldStartStrategy="drop",
                      checkpointInterval=-1, seed=seed)  # fmt: skip
            t = time.perf_counter()
            model = als.fit(ratings)  # materialises both factor tables (finalStorageLevel)
            fits[n_iter] = time.perf_counter() - t
            print(f"spark ALS maxIter={n_iter}: {fits[n_iter]:.1f}s", file=sys.stderr)
            model.userFactors.unpersist()
            model.itemFactors.unpersist()
            del model
        return {
            "spark_version": pyspark.__version__,
            "master": "local[2]",
            "driver_memory": driver_memory,
            "num_user_blocks": als.getNumUserBlocks(),
            "num_item_blocks": als.getNumItemBlocks(),
            "pairs": int(pairs),
            "session_start_s": start_s,
            "load_s": load_s,
            "fit_s": {str(k): v for k, v in fits.items()},
            "iterations": [a, b],
            "iteration_s": (fits[b] - fits[a]) / (b - a),
            "per_iteration_method": f"(fit(maxIter={b}) - fit(maxIter={a})) / {b - a}",
        }
    finally:
        spark.stop()


def main(argv=None):
    p = argparse.ArgumentParser(description="child process of bench_als.py: Spark MLlib ALS alone")
    p.add_argument("path")
    p.add_argument("--rank", type=int, default=64)
    p.add_argument("--iterations", default="1,3")
    p.add_argument("--reg", type=float, default=0.01)
    p.add_argument("--alpha", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--driver-memory", default="8g")
    args = p.parse_args(argv)
    a, b = (int(x) for x in args.iterations.split(","))
    res = run_spark(args.path, args.rank, (a, b), args.reg, args.alpha, args.seed, args.driver_memory)
    print(json.dumps(res))


if __name__ == "__main__":
    main()
