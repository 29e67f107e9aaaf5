"""Oxford Flowers-102: the official ``train`` (10 per class) / ``test`` split of setid.mat, ZSCL's names."""
from torchvision import datasets as tv

from .readers import two_splits
from .registry import DatasetSpec, as_is, register, torchvision_hint

# Flowers-102 label k (0-based, the order of imagelabels.mat) -> name.
FLOWERS_NAMES = (
    "pink primrose", "hard-leaved pocket orchid", "canterbury bells", "sweet pea", "english marigold",
    "tiger lily", "moon orchid", "bird of paradise", "monkshood", "globe thistle", "snapdragon",
    "colt's foot", "king protea", "spear thistle", "yellow iris", "globe-flower", "purple coneflower",
    "peruvian lily", "balloon flower", "giant white arum lily", "fire lily", "pincushion flower",
    "fritillary", "red ginger", "grape hyacinth", "corn poppy", "prince of wales feathers",
    "stemless gentian", "artichoke", "sweet william", "carnation", "garden phlox", "love in the mist",
    "mexican aster", "alpine sea holly", "ruby-lipped cattleya", "cape flower", "great masterwort",
    "siam tulip", "lenten rose", "barbeton daisy", "daffodil", "sword lily", "poinsettia",
    "bolero deep blue", "wallflower", "marigold", "buttercup", "oxeye daisy", "common dandelion",
    "petunia", "wild pansy", "primula", "sunflower", "pelargonium", "bishop of llandaff", "gaura",
    "geranium", "orange dahlia", "pink-yellow dahlia", "cautleya spicata", "japanese anemone",
    "black-eyed susan", "silverbush", "californian poppy", "osteospermum", "spring crocus",
    "bearded iris", "windflower", "tree poppy", "gazania", "azalea", "water lily", "rose",
    "thorn apple", "morning glory", "passion flower", "lotus", "toad lily", "anthurium", "frangipani",
    "clematis", "hibiscus", "columbine", "desert-rose", "tree mallow", "magnolia", "cyclamen",
    "watercress", "canna lily", "hippeastrum", "bee balm", "ball moss", "foxglove", "bougainvillea",
    "camellia", "mallow", "mexican petunia", "bromelia", "blanket flower", "trumpet creeper",
    "blackberry lily",
)


class Flowers102(tv.Flowers102):
    classes = FLOWERS_NAMES  # ZSCL's names (torchvision >= 0.18 has them, with a stray "?")


SPEC = register(
    DatasetSpec(
        name="flowers",
        folder="flowers-102",
        read=two_splits("flowers", Flowers102, {"split": "train"}, {"split": "test"}),
        templates=("a photo of a {}, a type of flower.",),
        clean_names=as_is,
        download="Flowers102",
        split="official train (10 per class) / test of setid.mat",
        fetch_hint=torchvision_hint(
            "Oxford Flowers-102",
            "<root>/flowers-102/{jpg/,imagelabels.mat,setid.mat}",
            "fetch 102flowers.tgz, imagelabels.mat and setid.mat from https://www.robots.ox.ac.uk/~vgg/data/flowers/102/\n"
            "  into <root>/flowers-102/ and untar 102flowers.tgz there",
        ),
    )
)
