"""Long Range Arena DataModules (Tay et al., ICLR 2021) with the S4 pipeline's tokenization and splits.

Tasks: ``listops``, ``text`` (IMDB bytes), ``retrieval`` (AAN pairs), ``image`` (CIFAR-10 grayscale),
``pathfinder`` (32x32) and ``pathx`` (128x128). ListOps and Pathfinder/Path-X can be generated offline.
``python -m zoo.data.lra describe <task> data_dir=... [key=value ...]`` prints split sizes and label balance.
"""
from .common import LRADataError, LRADataModule, Vocab, collate_pairs, collate_tokens
from .image import CIFAR10GrayDataModule
from .listops import ListOpsDataModule, generate_listops
from .pathfinder import PathfinderDataModule, PathXDataModule, generate_pathfinder
from .retrieval import AANDataModule
from .text import IMDBDataModule

TASKS = {
    'listops': ListOpsDataModule,
    'text': IMDBDataModule,
    'retrieval': AANDataModule,
    'image': CIFAR10GrayDataModule,
    'pathfinder': PathfinderDataModule,
    'pathx': PathXDataModule,
}

__all__ = ['TASKS', 'LRADataError', 'LRADataModule', 'Vocab', 'collate_pairs', 'collate_tokens',
           'ListOpsDataModule', 'generate_listops', 'IMDBDataModule', 'AANDataModule', 'CIFAR10GrayDataModule',
           'PathfinderDataModule', 'PathXDataModule', 'generate_pathfinder']
