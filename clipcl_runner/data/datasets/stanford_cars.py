"""Stanford Cars: the official ``train`` / ``test`` (cars_test_annos_withlabels.mat); fetched by hand only."""

from torchvision import datasets as tv

from .readers import two_splits
from .registry import DatasetSpec, register

SPEC = register(
    DatasetSpec(
        name="stanford_cars",
        folder="stanford_cars",
        read=two_splits("stanford_cars", tv.StanfordCars, {"split": "train"}, {"split": "test"}),
        templates=(
            "a photo of a {}, a type of car.",
            "a photo of a {}.",
            "a photo of the {}.",
            "a photo of my {}.",
            "i love my {}!",
            "a photo of my dirty {}.",
            "a photo of my clean {}.",
            "a photo of my new {}.",
            "a photo of my old {}.",
        ),
        download=None,  # torchvision's download is disabled: the original URL is gone
        split="official train / test",
        fetch_hint=(
            "Stanford Cars cannot be downloaded automatically (its original URL is gone; torchvision's download\n"
            "  is disabled). Follow https://github.com/pytorch/vision/issues/7545#issuecomment-1631441616 :\n"
            "  the images from Kaggle (https://www.kaggle.com/datasets/jessicali9530/stanford-cars-dataset, remove the\n"
            "  doubled folders such as cars_train/cars_train), car_devkit.tgz from\n"
            "  https://github.com/pytorch/vision/files/11644847/car_devkit.tgz and cars_test_annos_withlabels.mat, so that\n"
            "  <root>/stanford_cars/devkit/{cars_meta.mat,cars_train_annos.mat}, <root>/stanford_cars/cars_train/*.jpg,\n"
            "  <root>/stanford_cars/cars_test/*.jpg and <root>/stanford_cars/cars_test_annos_withlabels.mat exist."
        ),
    )
)
