"""Attribution in one namespace: methods, targets and the metrics that rank them, for classifiers and
detectors alike.

    from jaxvis import attribution as at

    why = at.explain(ssd, images, at.detections(det, [[0, 1]] * len(images)), at.odam())
    mine = at.target(my_fn, region=regions, cls=classes)      # a target of your own: my_fn(model, outputs, fields)
    maps = at.reduce_channels(at.explain(model, images, mine, at.smoothgrad(samples=16)).attributions, "max")

The names are those of ``jaxvis.saliency`` (methods, targets, ``explain``) and ``jaxvis.metrics``; see each
for the details.
"""

from jaxvis.metrics import (box_energy, cascading_randomisation, centroid_offset, deletion_insertion,
                            detection_deletion_insertion, energy_pointing, instance_specificity, match_detections,
                            pointing_hit, spearman, staged_randomisation)
from jaxvis.saliency import (Explanation, SaliencyError, Target, box_coordinate, box_label, class_score, detection,
                             detections, drise, explain, grad_x_input, gradcam, gradient, integrated, odam,
                             reduce_channels, smoothgrad, target, top_k_classes)

__all__ = [
    "Explanation", "SaliencyError", "Target", "box_coordinate", "box_energy", "box_label", "cascading_randomisation",
    "centroid_offset", "class_score", "deletion_insertion", "detection", "detection_deletion_insertion",
    "detections", "drise", "energy_pointing", "explain", "grad_x_input", "gradcam", "gradient",
    "instance_specificity", "integrated", "match_detections", "odam", "pointing_hit", "reduce_channels",
    "smoothgrad", "spearman", "staged_randomisation", "target", "top_k_classes",
]
