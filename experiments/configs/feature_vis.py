r"""Feature-visualisation recipes: Lucid's parts (an image parameterisation, random transforms, Adam)
in the vmapped engine, and the lab's plain loss to compare them with.

  python -m experiments.class_model --config experiments/configs/feature_vis.py:shapes --out runs/fv_shapes
  python -m experiments.evaluate --run shapes=runs/fv_shapes --out runs/fv_shapes_eval

``shapes``: every class of the shipped shapes classifier x 4 seeds (24 points). The image lives in a
decorrelated Fourier basis through a sigmoid (Lucid's standard image, with the shapes images' colour
matrix and a 1/f^1.5 spectrum); at every step the network sees two random copies of it (views=2, their
losses averaged), each jittered, zoomed by 0.65-1.35 and turned by any angle up to 180 degrees, with the
image repeated (wrap) instead of grey outside it, then jittered again; 768 Adam steps of the class score
at lr 0.05. The classifier was trained on shapes at every angle, so asking the class model to hold at
every angle asks for the shape rather than for one view's texture. About 1 min on a 2-core CPU. Measured
with experiments.evaluate: the shipped judge reads 23 of the 24 images as their class (every square,
triangle, star, cross and ring, 3 of 4 circles), and 47 of 48 with seeds 0-7 (512 steps: 45 of 48); the
classifier's own probability is >= 0.99 on every image. What the images show: one large shape per image
on a coloured clutter of background: filled discs, triangles, rings drawn as spirals or concentric rings,
stars with five to seven points, crosses as six- to eight-armed stars (their four arms seen at several
angles at once), squares as rounded blocks with notched corners. The circle the judge misses is a disc
cut by the image's edge (the image is periodic under the transforms, so the shape may sit across it).

Recipes tried on the way (judge reads, of 24; own probability >= 0.9 on all unless said): the earlier
recipe (pad 8, jitter 8, scale 0.8-1.2, rotate 20, jitter 4; 256 steps, one view) 20 (1 of 4 stars);
rotate 36: 18; scale 0.65-1.35: 21 (1 star); scale 0.5-1.5: 17; + blur(1): 15 (own probability 0.89 on
one); + noise(0.3): 8 (down to 0.0); log_prob instead of the score: 18 (3 stars, own probability down to
0.33); score + 20 log_prob: 19 (down to 0.07); score + 10 sq: 13 (down to 0.05); decay 1: 17 (down to
0.0); 512 steps at lr 0.03: 20; four views: 20; grey-filled rotations up to 90 degrees (two views): 18
(down to 0.03), up to 180: 21 and 23 with 512 steps (every star), but some circles never form (own
probability 0.03 on the unturned image); the same with wrap and 512 steps: 23 (45 of 48 with seeds 0-7);
a grey pad of 8 before the wrapped transforms: 43 of 48; three views: 21; 768 steps: this recipe.

``shapes_ssd``: the shipped robust shapes detector (``assets.path("detector_robust")``: the shipped detector
fine-tuned on adversarial scenes, experiments/train_shapes.py), the MultiBox criterion with one target box,
every class x 2 seeds x 2 boxes: a centred 40 px box (the size of the quadrant scenes' shapes) and the lab's
centred quarter (64 px of the 128 px input); the detector has default boxes centred on both (its 3 x 3 and
1 x 1 maps). The image is a silhouette of one flat colour: the decorrelated Fourier image of ``shapes``
with an opacity channel (``alpha``) whose colours are replaced by their mean (``solid``), so that only the
outline is free, as the shapes scenes' objects are flat-coloured; it starts opaque (0.9) over the ellipse
inscribed in the target box and half-transparent elsewhere (``boxstart(0.9)``). The detector sees it over
a random background drawn anew for every view (1/f noise of random contrast), so only its opaque part can
hold the object, and a penalty of 0.5 x the mean opacity keeps that part small; it is reported, and judged,
over mid grey. Two views per step: the first sees the image as it is (``plain_views=1``: as it is reported,
the box unmoved), the second jittered by up to 4 px, zoomed by 0.65-1.35 and turned by any angle (wrap),
jittered by 2 px, its target box moved with it (the centre shifted, zoomed and turned with the image, the
size zoomed). 1536 Adam steps at lr 0.05 from noise of std 0.01, about 6 min on a 2-core CPU.

  python -m experiments.class_model --config experiments/configs/feature_vis.py:shapes_ssd --out runs/fv_ssd
  python -m experiments.evaluate --run shapes_ssd=runs/fv_ssd --out runs/fv_ssd_eval

Measured on a 2-core CPU with seeds 0-3 (the detector's probability of the class at the target box: the
best of the default boxes matched to it; the judge reads the box's crop resized to its input), 40 px box /
quarter: p >= 0.9 on 24 / 22 of 24 images (lowest 0.951 / 0.870: two of the quarter's triangles stay at
0.87 and 0.89), the judge reads 17 / 18 of 24; for seeds 0-1 (the recipe's run) and for seeds 2-3 alike,
6 / 5 classes sure (every image p >= 0.9) and 5 / 5 read (the judge reads at least one of the two). With
768 steps: p >= 0.9 on 24 / 20, the judge reading 13 / 16, and 4 / 4 classes read at seeds 2-3. What the
images show: one flat-coloured silhouette in the box, the colour the seed's (the same for every class of a
seed), on grey with specks of that colour scattered around it: clean discs, rings as discs with a hole,
stars as blobs with five to seven short points, crosses as lobed blobs or four-armed crosses, squares as
rounded or ragged blocks, triangles as blobs (the judge reads none of the four triangles at either box,
and one of 16 on the GPU below; it reads real triangles' tight crops for 38 %). How this was found:
docs/feature_vis_ssd_search.md, every class x seeds 0-7 x both boxes for ten variants
(``experiments.recipe_search``, on a GPU). Counted in blocks of two seeds (one run of the recipe), blocks
meeting 5 classes sure and 4 read, of four, at the 40 px box / the quarter, with this loss and learning
rate and 768 steps: the previous recipe (``shapes_ssd_free``) 0 / 1; with ``solid`` 0 / 2; with
``boxstart(0.9)`` 0 / 0; with both 0 / 2; with both and the plain view 3 / 4 (p >= 0.9 on 46 / 44 of 48,
the judge reading 23 / 34); ``boxstart`` and the plain view without ``solid`` 1 / 1; both with quarter
turns instead of any turn (``turn90(),rotate(20,wrap)``) 1 / 3; both with 1536 steps and no plain view
3 / 3 (the judge reading 33 / 36 of 48, p 41 / 39). So the plain view makes the detector sure and the
longer run makes the judge read: this recipe has both. A weight of 2 on the opacity outside the box
(``opacity_outside``) leaves 7-9 of 48 images at p >= 0.9 at 40 px. Without ``boxstart`` some boxes stay
empty (the opacity penalty clears them before the objective draws anything there); without the plain view
the detector is unsure of some silhouettes over grey that it finds over the views' backgrounds; without
``solid`` the boxes fill with textured blobs.
A run is bit-identical when repeated on one machine, but another CPU (other oneDNN kernels, other
rounding) or a GPU ends the ascent in other images: how often blocks of seeds meet the target, as above,
is the measure that carries over.

``shapes_ssd_free``: the previous detector recipe: ``shapes_ssd`` with the colours free (no ``solid``), a
start half-transparent everywhere (no ``boxstart``) and both views transformed (about 2.5 min). On the CPU,
quarter / 40 px box with seeds 0-1: the judge reads 10 / 7 of 12 crops, p >= 0.9 on 10 / 10 of 12 images,
on every image of 5 / 4 classes (the quarter's triangles reach 0.79-0.85; at 40 px a circle and a square
stay at 0.10 and 0.73). With seeds 0-3: the judge reads 18 / 11 of 24, p >= 0.9 on 20 / 18 of 24 and on
every image of 5 / 3 classes. It draws one flat-coloured shape in the box on grey with scattered fragments
around; at 40 px some circles and squares form as holes, a grey shape framed by colour, or stay empty.
The variants below were measured before ``shapes_ssd``: "this recipe" in them is ``shapes_ssd_free``.

``shapes_ssd_standard``: an earlier recipe on the standard shipped detector, for comparison: the transforms
of ``shapes_ssd_free``, every view transformed, without the opacity channel, 512 steps (about 1.5 min).
Quarter / 40 px: the judge reads 5 / 5 of 12, p >= 0.9 on 8 / 9 of 12 (every image of 3 / 4 classes); with
seeds 0-3 the judge reads 7 / 9 of 24.
It draws flat magenta or white blobs that fill the box, of which the detector is sure; only the circle is
drawn as its shape at every seed, and the square never forms at 3 of 4 points.

What made the difference, each on the quarter / 40 px box with seeds 0-1 (judge reads of 12, images with
p >= 0.9 of 12): on the standard detector, the opacity channel alone: judge 5 / -, p 7 / -; recolouring
(each view mixed towards a random flat colour by up to all of it): judge 6 / -, p 9 / - (seeds 0-3: 9 / 7
of 24 read); with 4 views, a 1/f^2 spectrum or lr 0.02 for 768 steps: judge 2-5, p 6-10. The detector
fine-tuned at 2/255 only: judge 6 / 3, p 9 / 9; at 2/255 then 4/255 (the shipped robust detector) with
the standard image: judge 8 / 3, p 9 / 7 (the 40 px circles never form, p 0.00); with the opacity channel
at 512 steps: judge 9 / 7 (48 px box: 4), p 10 / 9; at 768 steps: this recipe. Opacity weights 0.2 and 1
(48 px box: judge 5 and 6, p 9 and 8), three views (40 px: judge 7, p 8), or a grey background for the first
view (40 px: p 12 of 12, but the shapes drawn as grey holes: judge 3; without the penalty: judge 5, p 10):
no better. On the standard detector, the opacity 4x sharper: judge 6 / 5, p 4 / 1.
A detector robust at a larger budget (the robust detector fine-tuned further at 6/255 then 8/255, i.e.
--robust_budgets 0.00784,0.01569,0.02353,0.03137; mAP@0.5 0.997, mAP@[.5:.95] 0.848) with this recipe: judge
10 / 6, p 10 / 7 (every class read at the quarter, 4 of 6 at 40 px; sure of 5 / 2 classes); at 40 px with
1536 steps the judge reads every class (8 of 12) but p stays under 0.9 on five images (four at 0.67-0.90, a
cross at 0.03; sure of 1 class); a zoom of 0.85-1.2 at 40 px: judge 7, p 6 (on the shipped robust detector:
judge 4, p 7). The last steps seen without the transforms (the image as it is, over the random backgrounds)
raise the detector's probability at 40 px and cost the judge's reads: the last 10 % at 40 px, judge 3 / 5
and p 11 / 12 (shipped robust detector / the 8/255 one); the last 5 % (8/255): judge 10 / 5, p 8 / 12; the
last 3 % of 1536 steps (8/255): judge 8 / 7, p 8 / 11, sure of 3 / 5 classes: the 40 px box met, the quarter
not. The step size tapered linearly to a tenth over the last quarter of the steps: judge 9 / 4, p 11 / 7
(8/255: 10 / 7, p 9 / 8). On the shipped robust detector, 1536 steps: judge 8 / 7, p 10 / 8 (sure of 5 / 2
classes); with the last 3 % untransformed: judge 9 / 5, p 10 / 10 (5 / 3 classes read, 5 / 5 sure).
Backgrounds drawn as the shapes scenes' are (two-colour stripes, checks, waves or gradients with pixel
noise) instead of 1/f noise clear the clutter around the shape, and the judge reads 8 / 6 (8/255 detector:
10 / 7, 5 of 6 classes at both boxes), but over grey the detector is sure of almost none (p >= 0.9 on 1 / 0
of 12): it never saw a flat background in training. Half the views over each kind: judge 10 / 5, p 9 / 7.
Reported over one such background instead of grey (the 8/255 detector): judge 11 / 5, p 11 / 7 (every class
read at the quarter, sure of 5; 4 / 2 classes at 40 px), the cleanest pictures of all at the quarter (flat
discs, six-pointed stars, rings, lobed crosses, nothing around them), but at 40 px the box stays empty at 5
of 12 points (circles, squares, a triangle, a ring; opacity weight 0.2: 3 of 12; no opacity penalty: 4,
judge 5, p 7; 1536 steps: judge 5, p 6): the shape is drawn as a hole, a frame of fragments around the box;
on the shipped robust detector: judge 8 / 4, p 9 / 7. Rewarding opacity over the middle half of the box
(weight 1) at 40 px: judge 6, p 6 (over 1/f noise, shipped robust detector) and judge 5, p 9 (over scene
backgrounds, 8/255); the squares stay holes. At the quarter with seeds 0-3, over scene backgrounds and
reported over one (8/255): judge 19 of 24, p >= 0.9 on 21 (this recipe: 18 and 20); another report
background gives the same counts at seeds 0-1.
Four more parts, each on the shipped robust detector unless said (seeds 0-1; quarter / 40 px box: judge
reads of 12, images with p >= 0.9 of 12, classes read / sure of 6). The robust detector finds real 40 px
shapes drawn at the centre over the scenes' backgrounds (median p 0.99) and almost none of them over flat
grey (0.00; tests/test_shapes_models.py), so p over grey understates what the views taught it. Reported
over a backdrop of the views' kind instead (``alpha(C)``: 1/f noise of contrast C from the point's seed):
C 0.5: judge 10 / 5, p 9 / 9 (6 / 4 read, 4 / 4 sure); C 1: judge 10 / 4, p 11 / 8 (5 / 3, 5 / 3); the
pictures are busy, and at 40 px circles and squares stay empty (p 0.00). A penalty on the opacity outside
the target box (``opacity_outside``, weight 2: nothing inside the box, full weight 4 px past its edge) draws
the cleanest pictures, the shape alone on grey, but the detector is sure of few: judge 9 / 9, p 7 / 4 (5 /
5, 2 / 1); with the 0.5 backdrop: judge 9 / 8, p 11 / 8 (5 / 4, 5 / 3); with the opacity weight 0.2 as
well: judge 10 / 6, p 11 / 8 (5 / 4, 5 / 4). One of the two views seen untransformed (``plain_views=1``):
judge 7 / 4, p 9 / 8 (5 / 3, 4 / 3); on the 8/255 detector: judge 9 / 6, p 10 / 10 (5 / 4, 5 / 4). A detector
trained with decoys (the robust detector and one more 800-step stage at 4/255 with ``--decoy_share 0.5``:
half its scenes hold a shape-shaped hole in a frame of clutter, which is no object; mAP@0.5 0.9997,
mAP@[.5:.95] 0.855) draws no holes, but its 40 px circles stay empty as well; with the 0.5 backdrop and the
outside penalty: judge 8 / 5, p 8 / 8 (6 / 4, 3 / 3). None beats this recipe at the 40 px box: in each,
circles or squares stay empty or under p 0.9 at some seeds.
A detector that sees shapes over flat backgrounds (the robust detector and two more 800-step stages at
4/255 with ``--flat_share 0.3 --even_noise``; mAP@0.5 0.989, over flat backgrounds 0.9999) with the
opacity penalty, the outside penalty (weight 2) and a start of std 0.1, at 40 px: judge 10, p 9 (5 / 4),
the shapes alone on grey but the squares empty (any turn); with ``turn90(),rotate(20,wrap)`` instead of
any turn the squares form (p 0.96 / 0.99): judge 6, p 10 (5 / 4), flatter blobs, a circle empty; with
``turn90(),rotate(45,wrap)``: judge 7, p 8 (4 / 3), both circles empty. A turned target box kept at its
size asks a square for a smaller square at 45 degrees than at 0; a box that grows with the turn
(``rotate(d, grow)``) asks a disc for a larger one instead. With the detector after the first of the two
stages only (mAP@0.5 0.976, over flat backgrounds 0.9997), the same loss at 40 px: any turn, box kept:
judge 4, p 9 (3 / 4); any turn, box grown halfway (``rotate(180,0.5,wrap)``): judge 5, p 7 (4 / 3), circles
and squares empty; ``turn90(),rotate(20,1,wrap)`` (a square's box exact): judge 2, p 9 (2 / 4), the
squares filled blocks of one colour (p 0.98 / 0.96, read by the judge as circles), every other class a
blob filling the box, the circles empty.
On the two-stage flat detector, one of the two views untransformed (``plain_views=1``) with the outside
penalty and the start of std 0.1: at 40 px, seeds 0-1: judge 6, p 11 (5 / 5 classes read / sure: the 40 px box
met, by chance: seeds 2-3 give judge 2, p 8, 2 / 4, the circles and squares empty or under 0.9), the shapes as
flat blobs filling the box; at the quarter: judge 5, p 8 (4 / 3), circles, squares and triangles drawn as
frames of fragments around the empty box. Without the outside penalty (this recipe's loss and start, one view
plain): judge 3 / 6 at 40 px / the quarter, p 8 / 8 (3 / 3, 5 / 3). Three views, one of them plain, with the
outside penalty: judge 5 / 4, p 9 / 8 (3 / 4, 3 / 3). A view seen as reported, with the box unturned, does not
make the circles and squares form at every seed. This recipe as it is on the flat detector: judge 5 / 6,
p 6 / 5 (4 / 2, 4 / 2): over grey it is sure of fewer than the shipped robust detector.
Earlier, on the standard detector (40 px box / quarter): jitter 8, zoom 0.8-1.25, turns up to 45 degrees,
jitter 4 (768 steps): judge 0 / 4 of 12, p 10 / 10; the same at 512 steps + total variation (weight 1 / 5):
judge 2 / 3 and 2 / 4, p 6 / 11 and 9 / 11; jitter 2, zoom 0.85-1.15, any turn, jitter 2 (768 steps):
judge 1 / 4, p 6 / 9. On the detector shipped before it (maps of 16, 8, 4 and 2 cells, trained on
quadrant scenes only: no default box at the centre), no recipe reached p >= 0.9 at the quarter (0.40-0.79).
The judge itself reads the tight box crop of real shapes drawn at the centre for 73 % of them (squares and
triangles 38 %, touching the crop's edges).

``shapes_ssd_lab``: the lab's three detector objectives side by side with the shapes_ssd recipe's detector,
image and transforms, one seed, each with the opacity penalty: the biggest default box's class score with
the localisation of that box on the target, the class score over all default boxes, and MultiBox (36
points, about 8 min). Judge reads of 6 and images with p >= 0.9 of 6, 40 px box / quarter: biggest box +
localisation 1 / 2 and 3 / 6 (large silhouettes across the box and beyond it); all boxes 1 / 1 and 0 / 0
(discs tiled over the image); MultiBox 4 / 5 and 6 / 6 (one silhouette in the box).

``lab``: the lab's plain loss for comparison: -score + mean(x^2) on the pixels, SGD at lr 1 for 200
steps from faint noise, every class x 4 seeds.

``ssd300``: the detector recipe for torchvision's SSD300 (COCO; --params of a converted checkpoint, the
category on the command line, e.g. --categories horse): MultiBox with the lab's centred quarter-size box
(150 px of 300), the decorrelated Fourier image with an opacity channel (ImageNet's colour matrix, 1/f
spectrum) seen over random backgrounds, two views per step with Lucid's mild transforms (objects of
photographs stand upright, so turns stay small) moving the target box, 512 Adam steps, two seeds. SSD300's
forward and backward pass takes about 1.3 s an image on a 2-core CPU: about 45 minutes for the two seeds.

  python -m experiments.class_model --config experiments/configs/feature_vis.py:ssd300 --params ssd300.safetensors \
      --categories horse --out runs/fv_ssd300

``lucid``: the same recipe for an ImageNet VGG (ImageNet's colour matrix; categories as given on the
command line, e.g. --categories goose); 512 steps at 224x224, minutes per point on a CPU.

``maco``: MACO (Fel et al. 2023) for the shapes classifier: only the Fourier phase is optimised, the
magnitude fixed to the shapes images' mean spectrum, with crops that shrink from the whole image to
half of it over the run, and a little noise.
"""

from ml_collections import ConfigDict

from experiments.configs import default
from jaxvis import assets

SHAPES = ("circle", "square", "triangle", "star", "cross", "ring")
# a centred box of the size of the shapes the detector was trained on (40 px of its 128 px input; the
# shapes' boxes measure 28 to 54 px); the lab's centred quarter-size box is "centre_quarter"
TRAINED_BOX = "44,44,84,84"
RECIPES = ("shapes", "shapes_ssd", "shapes_ssd_free", "shapes_ssd_lab", "shapes_ssd_standard", "lab", "maco", "lucid",
           "ssd300")
# every angle, the image repeated outside itself rather than grey (see the docstring)
ROBUST = "jitter(8),scale(0.65,1.35,wrap),rotate(180,wrap),jitter(4)"


def get_config(arg: str = "shapes") -> ConfigDict:
    c = default.get_config()
    c.optimizer = "adam"
    c.lrs = (0.05,)
    c.init = (0.01,)
    c.loss = ("score",)
    if arg == "shapes":
        c.params = assets.path("classifier")
        c.categories = SHAPES
        c.seeds = (0, 1, 2, 3)
        c.steps = 512
        c.parameterization = "fourier(1.5)+decorrelated+sigmoid"
        c.transforms = ROBUST
        c.views = 2
        c.steps = 768
        c.snapshots = (64, 768)
    elif arg == "shapes_ssd_lab":
        c = get_config("shapes_ssd")
        c.seeds = (0,)
        c.loss = ("biggest_box+box_loc+0.5*opacity", "all_boxes+0.5*opacity", "multibox+0.5*opacity")
    elif arg == "shapes_ssd_standard":
        c = get_config("shapes_ssd")
        c.params = assets.path("detector")
        c.loss = ("multibox",)
        c.parameterization = "fourier(1.5)+decorrelated+sigmoid"
        c.plain_views = 0
        c.steps = 512
        c.snapshots = (64, 512)
    elif arg == "lab":
        c.params = assets.path("classifier")
        c.categories = SHAPES
        c.seeds = (0, 1, 2, 3)
        c.optimizer = "sgd"
        c.lrs = (1.0,)
        c.steps = 200
        c.loss = ("score+sq",)
        c.snapshots = (10, 50, 200)
    elif arg == "maco":
        c.params = assets.path("classifier")
        c.categories = SHAPES
        c.seeds = (0, 1, 2, 3)
        c.steps = 256
        c.parameterization = "maco+clip"
        c.transforms = "crop(1.0,0.5),noise(0.02)"
    elif arg == "shapes_ssd":
        c.params = assets.path("detector_robust")
        c.categories = SHAPES
        c.seeds = (0, 1)
        c.loss = ("multibox+0.5*opacity",)
        c.boxes = (TRAINED_BOX, "centre_quarter")
        c.parameterization = "fourier(1.5)+decorrelated+sigmoid+alpha+solid+boxstart(0.9)"
        c.transforms = "jitter(4),scale(0.65,1.35,wrap),rotate(180,wrap),jitter(2)"
        c.views = 2
        c.plain_views = 1
        c.steps = 1536
        c.snapshots = (64, 1536)
    elif arg == "shapes_ssd_free":
        c = get_config("shapes_ssd")
        c.parameterization = "fourier(1.5)+decorrelated+sigmoid+alpha"
        c.plain_views = 0
        c.steps = 768
        c.snapshots = (64, 768)
    elif arg == "lucid":
        c.model = "vgg16"
        c.steps = 512
        c.seeds = (0, 1)
        c.parameterization = "fourier+decorrelated+sigmoid"
        c.transforms = "pad(12),jitter(8),scale(0.9,1.1),rotate(10),jitter(4)"
    elif arg == "ssd300":
        c.model = "ssd300_vgg16"
        c.seeds = (0, 1)
        c.steps = 512
        c.loss = ("multibox+0.5*opacity",)
        c.boxes = ("centre_quarter",)
        c.parameterization = "fourier+decorrelated+sigmoid+alpha"
        c.transforms = "pad(12),jitter(8),scale(0.9,1.1),rotate(10),jitter(4)"
        c.views = 2
        c.snapshots = (64, 512)
    else:
        raise ValueError(f"feature_vis recipes: {', '.join(RECIPES)}; got {arg!r}.")
    return c
