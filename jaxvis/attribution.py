"""Attribution in one namespace: methods, targets and the metrics that rank them, for classifiers and
detectors alike.

    from jaxvis import attribution as at

    why = at.odam().attribute(ssd, images, at.detections(det, [[0, 1]] * len(images)))
    mine = at.target(my_fn, region=regions, cls=classes)      # a target of your own: my_fn(model, outputs, fields)
    maps = at.smoothgrad(at.integrated(steps=16), samples=8).attribute(model, images, mine).reduce()
    curve = at.deletion_insertion(model, x, maps_in_input_space[0, 0], mine[:1].column(0))  # one image, one target

Every method is a ``Method`` value with ``attribute(model, images, targets)`` (``explain(model, images,
targets, method)`` is the same call); ``smoothgrad`` wraps any ``GradientMethod``. A gradient method of your
own subclasses ``GradientMethod`` and defines ``combine``; a class activation map subclasses ``CAM`` and
defines ``cam``. Scores (``logit``, ``prob``, ``log_prob``), channel reductions (``max_abs``, ``sum_abs``,
``l2_norm``, ``signed_sum``) and the CAMs' combinations of layers (``normalised_sum``, ``layer_sum``,
``own_level``) are functions, yours as well as these. The names are those of ``jaxvis.saliency``
and ``jaxvis.metrics``; see each for the details.
"""

from jaxvis.metrics import (box_energy, cascading_randomisation, centroid_offset, curves, deletion_insertion,
                            detection_deletion_insertion, energy_pointing, instance_specificity, match_detections,
                            pointing_hit, spearman, staged_randomisation)
from jaxvis.saliency import (CAM, Explanation, GradientMethod, Method, SaliencyError, Target, box_coordinate, box_label,
                             class_score, deconvnet, detection, detections, drise, explain, feature_ablation,
                             grad_x_input, gradcam, gradient, guided_backprop, guided_gradcam, integrated, l2_norm,
                             layer_sum, log_prob, logit, max_abs, normalised_sum, occlusion, odam, own_level, prob,
                             reduce_channels, signed_sum, smoothgrad, sum_abs, target, top_k_classes)

__all__ = [
    "CAM", "Explanation", "GradientMethod", "Method", "SaliencyError", "Target", "box_coordinate", "box_energy",
    "box_label", "cascading_randomisation", "centroid_offset", "class_score", "curves", "deconvnet",
    "deletion_insertion", "detection", "detection_deletion_insertion", "detections", "drise", "energy_pointing",
    "explain", "feature_ablation", "grad_x_input", "gradcam", "gradient", "guided_backprop", "guided_gradcam",
    "instance_specificity", "integrated", "l2_norm", "layer_sum", "log_prob", "logit", "match_detections", "max_abs",
    "normalised_sum", "occlusion", "odam", "own_level", "pointing_hit", "prob", "reduce_channels", "signed_sum",
    "smoothgrad", "spearman", "staged_randomisation", "sum_abs", "target", "top_k_classes",
]
