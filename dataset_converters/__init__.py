"""Converters from the authors' raw data layouts into RecBole atomic files.

Each converter builds a :class:`~dataset_converters.recbole_files.ConvertedDataset`
in memory and hands it to :func:`~dataset_converters.recbole_files.write_dataset`,
which writes ``DATA_DIR/NAME/NAME.{inter,item,yaml}`` (plus the split files)
atomically.  Converters import nothing from ``recbole_metammf``.
"""

from dataset_converters.safe_io import ConversionError

__all__ = ["ConversionError"]
