"""`benchmarks/fedscale.py --merge`: parts of the scale study run apart, from copies of the result
file made at different times, merge without an older copy undoing a re-run."""

from __future__ import annotations

from tests.benchmark_scripts import load_benchmark

SECTIONS = ("centralized", "runs", "engines", "secagg", "memory", "earlier")


def load_fedscale():
    return load_benchmark("fedscale")


def row(acc: float, options: str) -> dict:
    return {"test_acc": acc, "fed_options": options}


def body_of(runs: dict, earlier: dict | None = None) -> dict:
    return {s: {} for s in SECTIONS} | {"runs": runs, "earlier": earlier or {}}


def test_an_older_copy_does_not_undo_a_rerun_and_its_new_rows_are_taken():
    fs = load_fedscale()
    old, new = row(0.9793, "--server-opt adam"), row(0.9813, "--client-opt sgd")
    # the file now: task 5 re-run with new options, the old row kept under "earlier"
    body = body_of({"task5/iid": new}, {"task5/iid --server-opt adam": old})
    before = {s: dict(body[s]) for s in SECTIONS}
    # a part copied from the file BEFORE that re-run, which then ran a new row
    added = row(0.7474, "--client-opt sgd")
    part = body_of({"task5/iid": old, "task5/dirichlet": added})
    fs.merge_part(body, before, part, SECTIONS)
    assert body["runs"] == {"task5/iid": new, "task5/dirichlet": added}
    assert body["earlier"] == {"task5/iid --server-opt adam": old}
    # a part that holds the current grid row under "earlier" does not put it there
    part = body_of({"task5/iid": old}, {"task5/iid --client-opt sgd": new})
    fs.merge_part(body, before, part, SECTIONS)
    assert body["earlier"] == {"task5/iid --server-opt adam": old}


def test_a_rerun_in_a_part_replaces_the_row_and_keeps_the_old_one_under_earlier():
    fs = load_fedscale()
    old, new = row(0.9793, "--server-opt adam"), row(0.9813, "--client-opt sgd")
    body = body_of({"task5/iid": old, "task3/iid": row(0.99, "")})
    before = {s: dict(body[s]) for s in SECTIONS}
    fs.merge_part(body, before, body_of({"task5/iid": new, "task3/iid": row(0.99, "")}), SECTIONS)
    assert body["runs"]["task5/iid"] == new and body["runs"]["task3/iid"] == row(0.99, "")
    assert body["earlier"] == {"task5/iid --server-opt adam": old}
