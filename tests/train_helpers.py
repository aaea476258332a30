"""Small trainings for the tests: a config on tiny data, and a run (optionally resumed) to its end."""

from alphakern.train import TrainConfig, Trainer


def train_cfg(data_dir, out, **kw) -> TrainConfig:
    base = dict(data_dir=str(data_dir), out=str(out), epochs=2, batch_size=16, device="cpu", log_every=3)
    return TrainConfig(**{**base, **kw})


def run(c: TrainConfig, resume: bool = False) -> Trainer:
    t = Trainer(c, progress=False)
    if resume:
        t.load()
    t.run()
    return t
