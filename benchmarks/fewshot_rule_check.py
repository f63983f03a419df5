import json, warnings, sys
warnings.simplefilter("ignore")
import numpy as np
from dualpatch import DualPatchCore
from dualpatch.evaluation import evaluate
from dualpatch.protocol import make_splits
split = make_splits("kolektorsdd", "/work/shared/data/kolektorsdd", 3, None, "drop", 0)[0]
out = {}
for run in ("dual_paste_n_1", "dual_n_1"):
    m = DualPatchCore.load(f"/work/fewshot-runs/ksdd-fewshot-c01/runs/{run}/fold0-draw0-seed0/model")
    m.progress = False
    for rule in ("patch", "weighted"):
        m.rule = rule
        p = m.predict(split.test)
        masks = np.stack([s.mask((320, 128)) for s in split.test])
        r = evaluate(p.labels, p.image_scores, masks, p.anomaly_maps)
        out[f"{run} {rule}"] = {k: round(float(r[k]), 4) for k in ("image_auroc", "image_ap", "pixel_aupro")}
        print(run, rule, out[f"{run} {rule}"], flush=True)
json.dump(out, open("/work/fewshot-runs/rulecheck.json", "w"), indent=1)
