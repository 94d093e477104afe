"""Datasets for AEVB: readers, fixed train/valid/test splits, checksum-verified downloads.

``load_dataset(name_or_path, data_dir=None, *, download=False)`` returns a :class:`Dataset`
whose splits are float32 tensors ``(N, D)``, one example a row.

Named datasets (files looked up in ``<data_dir>/<subdir>/`` and then directly in
``<data_dir>/``, each gzipped or not; ``data_dir`` from :func:`resolve_data_dir`):

``mnist`` (subdir ``mnist/``)
    The four IDX files ``{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]``. Splits as in the
    classic ``mnist.pkl.gz``: train = training images 0..49999 (50000), valid = 50000..59999
    (10000), test = the t10k file (10000). Grey levels k/256, as in the authors' mnist.pkl.gz
    (``pixel_divisor=255`` gives k/255, the IWAE protocol's); labels 0..9.
``binarized-mnist`` (subdir ``binarized_mnist/``)
    Larochelle & Murray's statically binarized MNIST, ``binarized_mnist_{train,valid,test}.amat
    [.gz]``, 784 values 0/1 per line, split as distributed: 50000 / 10000 / 10000 (the test
    set is sorted by class). No labels.
``frey`` (subdir ``frey/``)
    ``frey_rawface.mat``: 1965 faces of 28 x 20 pixels, grey levels /256 (the paper's scaling,
    so values lie in 8/256..238/256). No standard split exists; a fixed permutation from a
    constant seed (:data:`aevb.data.splits.FREY_SPLIT_SEED`) gives train 1565, valid 200,
    test 200. No labels.
``mnist-sample``
    A real MNIST subset embedded in the package (``aevb/data/embedded/``, made by
    ``python -m aevb.data.make_embedded``) so that training works offline: the first 10000
    training images and the first 2000 t10k images with labels. Splits: train = embedded
    training images 0..8999 (9000), valid = 9000..9999 (1000), test = the 2000 test images.
    Grey levels k/256, like ``mnist``.

User files (``name_or_path`` a path; the dataset's name is the file's stem or the folder's name):

``.npy``
    One numeric array ``(N, D)``, ``(N, H, W)`` (grey images: ``image_shape = (H, W)``),
    ``(N, C, H, W)`` or ``(N, H, W, C)`` (C = 3 or 4 colour channels: ``image_shape = (C, H, W)``,
    rows flattened channels first; see :func:`image_features`). uint8 is divided by 255 (or
    ``pixel_divisor``), other types are converted to float32 unchanged. Split 80/10/10 by a seeded
    permutation (``split_seed``, default :data:`~aevb.data.splits.USER_SPLIT_SEED`; valid and
    test get ``N // 10`` rows each, so N >= 10 is needed).
``.npz``
    Keys ``train`` (required), ``valid``, ``test`` (each missing one is carved from train:
    ``N_train // 10`` rows by the same seeded permutation), and optional integer
    ``train_labels``/``valid_labels``/``test_labels``.
a folder
    PNG/JPEG images, grey or RGB, all of one size or resized to ``image_size``, either directly
    in it or in one subfolder per class (labels); read in name order (:mod:`.image_folder`),
    divided by 255 and split like an ``.npy`` file.

User arrays must be finite and non-empty; their range is not checked (whether values must lie
in [0, 1] depends on the decoder, which the caller knows). ``is_binary`` says whether every
value is exactly 0 or 1. Pickled objects are never loaded (``allow_pickle=False``).

Data of the user's own in memory or as a torch Dataset (:mod:`aevb.data.sources`: any real dtype,
images with channels, a Dataset or DataLoader read a minibatch at a time, :class:`NpyDataset` over a
memory-mapped ``.npy`` file) are what the Trainer takes; :func:`dataset_of` splits them into a
:class:`Dataset` for a run directory (:mod:`aevb.data.given`). ``load_dataset(path, stream=True)``
reads a ``.npy`` file's splits as needed.

Every problem a user can cause raises :class:`aevb.errors.AevbError` with a one-line message
naming the file. The network is used only with ``download=True`` (see :mod:`aevb.data.download`).
"""

from .datasets import DATASET_NAMES, PAPER_PIXEL_DIVISOR, Dataset, load_dataset, resolve_data_dir
from .given import dataset_of
from .images import USER_PIXEL_DIVISOR, image_features
from .sources import NpyDataset, StreamedRows, as_rows

__all__ = [
    "DATASET_NAMES",
    "PAPER_PIXEL_DIVISOR",
    "USER_PIXEL_DIVISOR",
    "Dataset",
    "NpyDataset",
    "StreamedRows",
    "as_rows",
    "dataset_of",
    "image_features",
    "load_dataset",
    "resolve_data_dir",
]
