"""Attribution in one namespace: methods, targets and the metrics that rank them, for classifiers and
detectors alike.

    from jaxvis import attribution as at

    why = at.odam().attribute(ssd, images, at.detections(det, [[0, 1]] * len(images)))
    mine = at.target(my_fn, region=regions, cls=classes)      # a target of your own: my_fn(model, outputs, fields)
    maps = at.smoothgrad(at.integrated(steps=16), samples=8).attribute(model, images, mine).reduce()
    curve = at.deletion_insertion(model, x, maps_in_input_space[0, 0], mine[:1].column(0))  # one image, one target

The methods, by family (each also a ``--method`` name of ``python -m experiments.saliency``):

- gradients: ``gradient`` (Simonyan et al. 2013), ``grad_x_input``, ``smoothgrad(method)``, ``integrated``,
  ``gradient_shap`` (``jaxvis.deeplift``);
- backward rules (``jaxvis.rules``, ``jaxvis.lrp``, ``jaxvis.deeplift``): ``guided_backprop``, ``deconvnet``,
  ``guided_gradcam``, ``deeplift``, ``deeplift_shap``, ``lrp_epsilon``, ``lrp_alphabeta``, ``lrp``;
- paths (``jaxvis.paths``): ``blur_ig``, ``guided_ig``, and ``xrai`` (regions ranked by integrated gradients; its
  segments need scikit-image);
- class activation maps: ``gradcam``, ``odam``;
- perturbations (``jaxvis.surrogates``): ``occlusion``, ``feature_ablation``, ``shapley_sampling``,
  ``kernel_shap``, ``lime``, and for detections ``drise``.

The metrics that rank them: ``pointing_hit``, ``energy_pointing``, ``deletion_insertion`` / ``curves``,
``cascading_randomisation`` (``jaxvis.metrics``), ``road``, ``infidelity``, ``max_sensitivity``
(``jaxvis.fidelity``).

Every method is a ``Method`` value with ``attribute(model, images, targets)`` (``explain(model, images,
targets, method)`` is the same call); ``smoothgrad`` wraps any ``GradientMethod``. A gradient method of your
own subclasses ``GradientMethod`` and defines ``combine``; a class activation map subclasses ``CAM`` and
defines ``cam``. Scores (``logit``, ``prob``, ``log_prob``), channel reductions (``max_abs``, ``sum_abs``,
``l2_norm``, ``signed_sum``) and the CAMs' combinations of layers (``normalised_sum``, ``layer_sum``,
``own_level``) are functions, yours as well as these. The names are those of ``jaxvis.saliency``
and ``jaxvis.metrics``; see each for the details.
"""

from jaxvis.deeplift import DeepLift, DeepLiftShap, GradientShap, deeplift, deeplift_shap, gradient_shap
from jaxvis.fidelity import Infidelity, RoadCurve, impute, infidelity, max_sensitivity, road
from jaxvis.lrp import LRP, AlphaBeta, Epsilon, lrp, lrp_alphabeta, lrp_epsilon
from jaxvis.metrics import (box_energy, cascading_randomisation, centroid_offset, curves, deletion_insertion,
                            detection_deletion_insertion, energy_pointing, instance_specificity, match_detections,
                            pointing_hit, spearman, staged_randomisation)
from jaxvis.saliency import (CAM, Explanation, GradientMethod, Method, SaliencyError, Target, box_coordinate, box_label,
                             class_score, deconvnet, detection, detections, drise, explain, feature_ablation,
                             grad_x_input, gradcam, gradient, guided_backprop, guided_gradcam, integrated, l2_norm,
                             layer_sum, log_prob, logit, max_abs, normalised_sum, occlusion, odam, own_level, prob,
                             reduce_channels, signed_sum, smoothgrad, sum_abs, target, top_k_classes)
from jaxvis.paths import XRAI, BlurIG, GuidedIG, blur_ig, guided_ig, xrai
from jaxvis.surrogates import KernelShap, Lime, ShapleySampling, kernel_shap, lime, shapley_sampling

__all__ = [
    "AlphaBeta", "blur_ig", "BlurIG", "box_coordinate", "box_energy", "box_label", "CAM",
    "cascading_randomisation", "centroid_offset", "class_score", "curves", "deconvnet", "DeepLift", "deeplift",
    "deeplift_shap", "DeepLiftShap", "deletion_insertion", "detection", "detection_deletion_insertion",
    "detections", "drise", "energy_pointing", "Epsilon", "explain", "Explanation", "feature_ablation",
    "grad_x_input", "gradcam", "gradient", "gradient_shap", "GradientMethod", "GradientShap", "guided_backprop",
    "guided_gradcam", "guided_ig", "GuidedIG", "impute", "Infidelity", "infidelity", "instance_specificity",
    "integrated", "kernel_shap", "KernelShap", "l2_norm", "layer_sum", "Lime", "lime", "log_prob", "logit", "LRP",
    "lrp", "lrp_alphabeta", "lrp_epsilon", "match_detections", "max_abs", "max_sensitivity", "Method",
    "normalised_sum", "occlusion", "odam", "own_level", "pointing_hit", "prob", "reduce_channels", "road",
    "RoadCurve", "SaliencyError", "shapley_sampling", "ShapleySampling", "signed_sum", "smoothgrad", "spearman",
    "staged_randomisation", "sum_abs", "Target", "target", "top_k_classes", "XRAI", "xrai",
]
