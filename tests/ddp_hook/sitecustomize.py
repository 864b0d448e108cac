"""Test hook for multi-process training (tests/test_distributed.py): with the environment variable
METAMMF_TEST_PARAMS_DIR set, every Python process started with this folder on PYTHONPATH (the
spawned ranks included) saves its model's parameters at the end of ``Trainer.fit`` (the last
step's, before RecBole reloads the best checkpoint) to ``rank{R}.pt`` in that folder."""

import os

_DIR = os.environ.get("METAMMF_TEST_PARAMS_DIR")

if _DIR:
    import torch
    from recbole.trainer import trainer as _trainer

    _fit = _trainer.Trainer.fit

    def _fit_and_save(self, *args, **kwargs):
        result = _fit(self, *args, **kwargs)
        rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
        params = {name: p.detach().clone() for name, p in self.model.named_parameters()}
        torch.save(params, os.path.join(_DIR, f"rank{rank}.pt"))
        return result

    _trainer.Trainer.fit = _fit_and_save
