"""Recommendations: ALS on Dask (implicit on one worker, or distributed block ALS), batch top-N.

Examples
--------
>>> from daskml_scale.data import make_interactions
>>> from daskml_scale.recommend import ALSRecommender, recommend_all
>>> ddf = make_interactions(20_000, n_users=300, n_items=100, seed=0)
>>> model = ALSRecommender(factors=8, iterations=3).fit(ddf)
>>> recommend_all(model, n=5).columns.tolist()
['user_id', 'item_id', 'score', 'rank']
"""

from ._als import ALSRecommender
from ._ann import ItemIndex, approximate_similar_items, recall_at_k
from ._artifacts import load_model
from ._foldin import recommend_new_users
from ._popularity import PopularityRecommender
from ._topn import recommend_all, similar_items

__all__ = [
    "ALSRecommender",
    "ItemIndex",
    "PopularityRecommender",
    "approximate_similar_items",
    "load_model",
    "recall_at_k",
    "recommend_all",
    "recommend_new_users",
    "similar_items",
]
