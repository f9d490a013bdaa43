"""Deployment as code: KubeRay manifests and a ``ray up`` config generated from the job config.

``raymlops deploy manifests`` (:mod:`raymlops.deploy.manifests`) writes ``deploy/kuberay/*.yaml`` and
``deploy/cluster/ray-up.yaml``
from ``deploy/values.yaml`` (what only a deployment knows: image, namespace, node sizes) and the job's
Hydra config (experiment, state_dir, serve port and app, retrain schedule, Ray Train scaling);
``raymlops.deploy.validate`` checks them against KubeRay's CRD schemas, core Kubernetes schemas and Ray's
cluster-launcher schema; ``raymlops.deploy.serve_app:app`` is the Serve application a RayService builds.
"""
