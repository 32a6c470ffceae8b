"""Accuracy figures: the evaluator on a hand-made clustering, the CLI on a real table."""

from __future__ import annotations

import pytest

from lakecdp.cli import main
from lakecdp.identity.accuracy import evaluate, load_labels
from lakecdp.tables import Tables

CLUSTERS = [
    # record, cluster          true person
    ("crm:r1", "c1"),        # P1
    ("shop:r2", "c1"),       # P1
    ("crm:r3", "c1"),        # P2  <- merged into P1's cluster: a false merge
    ("crm:r4", "c2"),        # P3
    ("shop:r5", "c3"),       # P3  <- split from r4: a miss
    ("crm:r6", "c4"),        # P4
    ("shop:r7", "c4"),       # P4
    ("crm:r8", "c5"),        # not labelled: not scored
]
LABELS = "source,source_record_id,person_id,household_id\n" + "\n".join(
    [
        "crm,r1,P1,H1", "shop,r2,P1,H1", "crm,r3,P2,H1", "crm,r4,P3,H2",
        "shop,r5,P3,H2", "crm,r6,P4,H3", "shop,r7,P4,H3",
        "web_events,d-1,P4,H3",  # a label without a record: not scored
    ]
) + "\n"


def test_evaluate_counts_pairs_clusters_merges_and_misses(spark, tmp_path):
    (tmp_path / "entities_0.csv").write_text(LABELS)
    clusters = spark.createDataFrame(CLUSTERS, "record_id string, cluster_key string")
    report = evaluate(clusters, load_labels(spark, tmp_path))

    # pairs: predicted c1:3 + c4:1 = 4; true P1:1 + P3:1 + P4:1 = 3; correct (c1,P1) + (c4,P4) = 2
    assert (report.predicted_pairs, report.true_pairs, report.correct_pairs) == (4, 3, 2)
    assert report.pairwise_precision == pytest.approx(0.5)
    assert report.pairwise_recall == pytest.approx(2 / 3)
    assert report.pairwise_f1 == pytest.approx(2 * 0.5 * (2 / 3) / (0.5 + 2 / 3))
    # clusters: c2, c3, c4 pure of 4 scored; persons: P1, P2, P4 whole of 4
    assert (report.records, report.clusters, report.persons) == (7, 4, 4)
    assert (report.cluster_precision, report.cluster_recall) == (0.75, 0.75)
    assert [(m.cluster, m.persons) for m in report.false_merges] == [("c1", 2)]
    assert report.false_merges[0].records == ["crm:r1=P1", "crm:r3=P2", "shop:r2=P1"]
    assert [(m.cluster, m.persons) for m in report.misses] == [("P3", 2)]
    assert "cluster    precision 0.7500  recall 0.7500" in report.format()


def test_identity_accuracy_command_reads_the_id_map(spark, project, tmp_path, capsys, monkeypatch):
    labels = tmp_path / "labels"
    labels.mkdir()
    (labels / "entities_0.csv").write_text(LABELS)
    id_map = spark.createDataFrame(
        [(rid, f"cust-{key}") for rid, key in CLUSTERS], "record_id string, customer_id string"
    )
    Tables(project).overwrite(id_map, "identity.id_map")
    # the command loads the project from conf/environments/<env>.yaml: write the test one
    conf = tmp_path / "conf"
    (conf / "environments").mkdir(parents=True)
    (conf / "environments" / "t.yaml").write_text(
        project.environment.model_dump_json()
    )
    assert main(["--conf", str(conf), "--env", "t", "identity-accuracy", "--labels", str(labels)]) == 0
    out = capsys.readouterr().out
    assert "cluster    precision 0.7500  recall 0.7500" in out
    assert "cust-c1: 2, crm:r1=P1, crm:r3=P2, shop:r2=P1" in out
