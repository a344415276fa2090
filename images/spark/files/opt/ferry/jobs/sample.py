"""ferry's sample PySpark job: estimates pi with numpy on the executors and
counts words with pandas on the executors, then prints one line whose
numbers are the same on every run (the random streams are seeded).

    spark-submit /opt/ferry/jobs/sample.py [samples]
"""
import sys

from pyspark.sql import SparkSession

PARTITIONS = 4
TEXT = [
    "spark runs on the cluster",
    "ferry ships the image to the cluster",
    "zookeeper keeps the spark masters honest",
]


def hits(seed, n):
    import numpy as np

    rng = np.random.default_rng(seed)
    xy = rng.random((n, 2))
    return int(((xy**2).sum(axis=1) <= 1.0).sum())


def count_words(lines):
    import pandas as pd

    words = pd.Series(" ".join(lines).split())
    return list(words.value_counts().items())


def main():
    samples = int(sys.argv[1]) if len(sys.argv) > 1 else 400_000
    per = samples // PARTITIONS
    spark = SparkSession.builder.appName("ferry-sample").getOrCreate()
    sc = spark.sparkContext
    inside = sc.parallelize(range(PARTITIONS), PARTITIONS).map(lambda s: hits(s, per)).sum()
    pi = 4.0 * inside / (per * PARTITIONS)
    counts = (
        sc.parallelize(TEXT, 3)
        .mapPartitions(lambda it: count_words(list(it)))
        .reduceByKey(lambda a, b: a + b)
        .collectAsMap()
    )
    top = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:3]
    print(f"ferry-sample: pi={pi:.4f} top-words={top}", flush=True)
    spark.stop()


if __name__ == "__main__":
    main()
