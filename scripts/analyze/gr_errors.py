"""Where generative retrieval puts the relevant passage, and which keys put it there.

Reads a split's candidate shards (`dgr retrieve`: every passage with the keys that counted for
it, each key's source view and what it added) and the split's qrels, and prints:

- how often the relevant passage is a candidate at all, and at which ranks;
- per view (title, body, query-span, unigram), how often one of its keys counted for the
  relevant passage, and for the passage ranked first when that one is not relevant;
- the share of the score each view gives the relevant passage and the wrong first passage;
- the score of the relevant passage against the first one's;
- the weights of the keys per view.

    PYTHONPATH=target/python-check python3 scripts/analyze/gr_errors.py JOB_DIR SPLIT [--json OUT]

(pyarrow: `pip install pyarrow`, or the copy `scripts/test.sh` installs into target/python-check.)
"""
import argparse
import collections
import glob
import json
import statistics

import pyarrow.ipc as ipc

VIEWS = ["title", "body", "query-span", "unigram"]


def read_candidates(directory):
    rows = []
    for path in sorted(glob.glob(f"{directory}/shard-*.arrow")):
        rows.extend(ipc.open_file(path).read_all().to_pylist())
    return rows


def read_qrels(path):
    relevant = collections.defaultdict(set)
    for line in open(path):
        parts = line.split()
        if len(parts) >= 4 and int(parts[3]) > 0:
            relevant[parts[0]].add(parts[2])
        elif len(parts) == 3 and int(parts[2]) > 0:
            relevant[parts[0]].add(parts[1])
    return relevant


def by_view(row, position):
    """What each view's keys added to the passage at `position`; the rest of its score,
    `unigram term`, is the unigram scores of its tokens that no key covered."""
    added = collections.Counter()
    for key, score in zip(row["passage_keys"][position], row["passage_key_scores"][position]):
        added[row["key_sources"][key]] += score
    added["unigram term"] = row["scores"][position] - sum(added.values())
    return added


def shares(added):
    total = sum(v for v in added.values())
    return {view: (added[view] / total if total else 0.0) for view in VIEWS + ["unigram term"]}


def percent(count, total):
    return 100.0 * count / total if total else 0.0


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("job")
    parser.add_argument("split")
    parser.add_argument("--json", help="write the aggregates here too")
    args = parser.parse_args()
    rows = read_candidates(f"{args.job}/candidates/{args.split}")
    relevant = read_qrels(f"{args.job}/data/qrels-{args.split}.tsv")
    rows = [r for r in rows if r["query_id"] in relevant]

    ranks = []
    counted_for_relevant = collections.Counter()
    counted_for_wrong_first = collections.Counter()
    relevant_shares = collections.defaultdict(list)
    wrong_shares = collections.defaultdict(list)
    score_ratio = []
    wrong_first = 0
    key_weights = collections.defaultdict(list)
    for row in rows:
        for source, weight in zip(row["key_sources"], row["key_weights"]):
            key_weights[source].append(weight)
        positions = [i for i, p in enumerate(row["passage_ids"]) if p in relevant[row["query_id"]]]
        rank = positions[0] + 1 if positions else None
        ranks.append(rank)
        if rank is None:
            continue
        position = positions[0]
        relevant_added = by_view(row, position)
        for view in VIEWS:
            if any(row["key_sources"][k] == view for k in row["passage_keys"][position]):
                counted_for_relevant[view] += 1
        for view, share in shares(relevant_added).items():
            relevant_shares[view].append(share)
        if rank > 1:
            wrong_first += 1
            first_added = by_view(row, 0)
            for view in VIEWS:
                if any(row["key_sources"][k] == view for k in row["passage_keys"][0]):
                    counted_for_wrong_first[view] += 1
            for view, share in shares(first_added).items():
                wrong_shares[view].append(share)
            if row["scores"][0] > 0:
                score_ratio.append(row["scores"][position] / row["scores"][0])

    queries = len(rows)
    found = [r for r in ranks if r is not None]
    recall = {k: percent(sum(1 for r in found if r <= k), queries) for k in (1, 5, 20, 100)}
    result = {
        "queries": queries,
        "recall": recall,
        "relevant_is_a_candidate": percent(len(found), queries),
        "median_rank_when_candidate": statistics.median(found) if found else None,
        "views_that_counted_for_the_relevant_passage": {v: percent(counted_for_relevant[v], len(found)) for v in VIEWS},
        "views_that_counted_for_a_wrong_first_passage": {
            v: percent(counted_for_wrong_first[v], wrong_first) for v in VIEWS
        },
        "score_share_of_the_relevant_passage": {v: statistics.mean(s) for v, s in relevant_shares.items()},
        "score_share_of_a_wrong_first_passage": {v: statistics.mean(s) for v, s in wrong_shares.items()},
        "relevant_score_over_first_score_median": statistics.median(score_ratio) if score_ratio else None,
        "key_weight_median_by_view": {v: statistics.median(w) for v, w in key_weights.items()},
        "keys_per_query_by_view": {v: len(w) / queries for v, w in key_weights.items()},
    }
    print(f"{args.job} {args.split}: {queries} queries")
    print("  ".join(f"R@{k} {recall[k]:.1f}" for k in (1, 5, 20, 100)))
    print(f"relevant passage among the candidates: {result['relevant_is_a_candidate']:.1f}%, "
          f"median rank there {result['median_rank_when_candidate']}")
    print("| view | counted for the relevant passage | for a wrong first passage | score share, relevant | "
          "score share, wrong first | median key weight | keys per query |")
    print("|---|---|---|---|---|---|---|")
    for view in VIEWS + ["unigram term"]:
        cells = [view]
        for counts in ("views_that_counted_for_the_relevant_passage", "views_that_counted_for_a_wrong_first_passage"):
            cells.append(f"{result[counts][view]:.1f}%" if view in result[counts] else "—")
        for share in ("score_share_of_the_relevant_passage", "score_share_of_a_wrong_first_passage"):
            cells.append(f"{100 * result[share].get(view, 0.0):.1f}%")
        weights = result["key_weight_median_by_view"]
        cells.append(f"{weights[view]:.2f}" if view in weights else "—")
        cells.append(f"{result['keys_per_query_by_view'][view]:.1f}" if view in weights else "—")
        print("| " + " | ".join(cells) + " |")
    if score_ratio:
        print(f"when a wrong passage is first, the relevant one scores {result['relevant_score_over_first_score_median']:.2f}"
              " of its score (median)")
    if args.json:
        with open(args.json, "w") as out:
            json.dump(result, out, indent=2)


if __name__ == "__main__":
    main()
