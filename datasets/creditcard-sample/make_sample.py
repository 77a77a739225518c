"""Make creditcard_sample.csv: 300 SYNTHETIC rows in the format of the ULB creditcard.csv.

Not real data: Time increases over two days, V1..V28 are standard normals (fraud rows shifted on a few
components), Amount is log-normal, Class is 1 for about 2% of rows. Used by the tests of
load_creditcard only. Run: python make_sample.py (deterministic, seed 0).
"""

import numpy as np
import pandas as pd

rng = np.random.default_rng(0)
n = 300
time = np.sort(rng.uniform(0, 172792, n)).round(0)
cls = (rng.random(n) < 0.02).astype(int)
cls[[50, 150, 250]] = 1
v = rng.standard_normal((n, 28))
v[cls == 1, :4] += np.array([-3.0, 2.5, -4.0, 3.0])
amount = np.exp(rng.normal(3.0, 1.2, n)).round(2)
df = pd.DataFrame({"Time": time})
for i in range(28):
    df[f"V{i + 1}"] = v[:, i].round(6)
df["Amount"] = amount
df["Class"] = cls
df.to_csv("creditcard_sample.csv", index=False, quoting=0)
