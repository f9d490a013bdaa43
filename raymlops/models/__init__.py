"""Model families: the contract (:mod:`raymlops.models.family`), the registry of names
(:mod:`raymlops.models.registry`), the shipped families (``torch_mlp``, ``xgboost_model``) and the
export of preprocessing + model as one ONNX graph (:mod:`raymlops.models.export`)."""
