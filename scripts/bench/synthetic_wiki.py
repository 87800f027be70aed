#!/usr/bin/env python3
"""A wiki-vital input of any size for scale measurements, deterministic.

    python3 scripts/bench/synthetic_wiki.py PASSAGES OUT.json [SOURCE.json]

The real articles (SOURCE, default assets/wiki-vital/summaries_en-us.json) come first, as they
are: their descriptions stay the queries, so the train/dev/test queries and judgments are the
real set's. Copies follow until there are PASSAGES articles: copy k of an article has the title
"<title> (k)", the article's words shuffled (seeded by title and k) and no description, so it
adds passages, tokens and indexing pairs but no query.
"""
import json
import random
import sys


def main() -> None:
    passages = int(sys.argv[1])
    out = sys.argv[2]
    source = sys.argv[3] if len(sys.argv) > 3 else "assets/wiki-vital/summaries_en-us.json"
    with open(source, encoding="utf-8") as f:
        articles = json.load(f)
    real = [a for a in articles.values() if a.get("title") and a.get("extract")]
    result = dict(articles)
    copy = 0
    while len(result) < passages:
        copy += 1
        for article in real:
            if len(result) >= passages:
                break
            title = f"{article['title']} ({copy})"
            words = article["extract"].split()
            random.Random(f"{title}").shuffle(words)
            result[title] = {"title": title, "extract": " ".join(words)}
    with open(out, "w", encoding="utf-8") as f:
        json.dump(result, f, ensure_ascii=False)
    print(f"{out}: {len(result)} articles ({len(articles)} real, {copy} rounds of copies)")


if __name__ == "__main__":
    main()
