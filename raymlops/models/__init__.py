"""Model families. Each is chosen by the ``model`` config group's ``_target_`` and offers
``fit(datasets, trainer_cfg, storage_path, seed)``, ``predict_proba(x)`` and ``to_onnx(num_features, opset)``;
the ONNX graph maps input ``features`` [N, F] to output ``probability`` [N]."""
