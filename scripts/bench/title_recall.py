"""How often generative retrieval decoded the relevant passage's title (a diagnostic of the
title identifiers): python3 scripts/bench/title_recall.py JOB_DIR SPLIT... after
`dgr retrieve --split SPLIT` (reads JOB_DIR/data and JOB_DIR/candidates/SPLIT)."""
import pyarrow.ipc as ipc, glob, sys
from tokenizers import Tokenizer
tok=Tokenizer.from_file('assets/minilm/tokenizer.json'); tok.no_padding(); tok.no_truncation()
job=sys.argv[1]
corpus={r['id']:r['title'] for r in ipc.open_file(f'{job}/data/corpus.arrow').read_all().select(['id','title']).to_pylist()}
for split in sys.argv[2:]:
    qrels={}
    for l in open(f'{job}/data/qrels-{split}.tsv'):
        q,_,d,r=l.split(); qrels[q]=d
    n=found=top=0
    for f in sorted(glob.glob(f'{job}/candidates/{split}/*.arrow')):
        for r in ipc.open_file(f).read_all().to_pylist():
            n+=1
            want=tok.encode(corpus[qrels[r['query_id']]]+' @@',add_special_tokens=False).ids
            titles=[(lp,k) for s,k,lp in zip(r['key_sources'],r['key_tokens'],r['key_log_probs']) if s=='title']
            if any(k==want for _,k in titles): found+=1
            if titles and max(titles)[1]==want: top+=1
    print(f"{split}: relevant title among decoded titles {found}/{n} = {found/n:.3f}; most likely title {top/n:.3f}")
