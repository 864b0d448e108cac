from recbole_metammf.model.base import MultimodalRecommender
from recbole_metammf.model.freedom import FREEDOM
from recbole_metammf.model.grcn import GRCN
from recbole_metammf.model.lattice import LATTICE
from recbole_metammf.model.metammf_gcn import MetaMMF_GCN
from recbole_metammf.model.metammf_mf import MetaMMF_MF
from recbole_metammf.model.mmgcn import MMGCN
from recbole_metammf.model.vbpr import VBPR
