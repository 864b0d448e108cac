from recbole_metammf.model.base import MultimodalRecommender
from recbole_metammf.model.metammf_gcn import MetaMMF_GCN
from recbole_metammf.model.metammf_mf import MetaMMF_MF
