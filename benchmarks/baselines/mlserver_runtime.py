"""An MLServer custom runtime (``mlserver.MLModel``) around onnxruntime, for serve_vs_raw's baseline.

MLServer's documented way to serve a model it has no runtime for: a subclass of ``MLModel`` whose
``load`` builds the model and whose ``predict`` answers a V2 ``InferenceRequest``. Here it is the same
ONNX graph and the same onnxruntime session options as ours (one intra- and one inter-op thread, CPU),
one input tensor per column (FP32 for a number, BYTES for a string), the ``probability`` output back.
Imported by MLServer in the baselines venv, never by our code.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
from mlserver import MLModel
from mlserver.codecs import NumpyCodec, StringCodec
from mlserver.types import InferenceRequest, InferenceResponse


class OnnxFlights(MLModel):
    async def load(self) -> bool:
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        uri = self.settings.parameters.uri if self.settings.parameters else None
        self._session = ort.InferenceSession(uri, sess_options=options, providers=["CPUExecutionProvider"])
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        feeds = {}
        for tensor in payload.inputs:
            if tensor.datatype == "BYTES":
                feeds[tensor.name] = np.asarray(StringCodec.decode_input(tensor), dtype=object).reshape(-1, 1)
            else:
                feeds[tensor.name] = NumpyCodec.decode_input(tensor).astype(np.float32).reshape(-1, 1)
        probability = self._session.run(["probability"], feeds)[0].reshape(-1)
        return InferenceResponse(
            model_name=self.name,
            model_version=self.version,
            outputs=[NumpyCodec.encode_output("probability", probability)],
        )
