from recbole_metammf.layers.fusion import MetaFusionLayer, MetaFusionNetwork, MetaInfoExtractor
