"""A pipeline's progress display: one tqdm line per stage, redrawn by the run's clock.

Each line counts the items the stage settled (emitted, filtered or failed) and shows how
full its inbox is, so the slow stage is the one whose queue stays full in front of it.
tqdm is imported only when a display is asked for.
"""

from __future__ import annotations

from typing import Any

from ._report import StageStats


class StageLines:
    def __init__(self, names: list[str], total: int | None = None) -> None:
        from tqdm.auto import tqdm

        self._bars: dict[str, Any] = {
            name: tqdm(desc=name, total=total, position=i, unit="item", dynamic_ncols=True)
            for i, name in enumerate(names)
        }

    def show(self, stages: tuple[StageStats, ...]) -> None:
        for stage in stages:
            bar = self._bars.get(stage.name)
            if bar is None:
                continue
            settled = stage.emitted + stage.filtered + stage.failed
            if settled > bar.n:
                bar.update(settled - bar.n)
            bar.set_postfix_str(
                f"queue {stage.depth}/{stage.bound}, failed {stage.failed}", refresh=False
            )

    def close(self, stages: tuple[StageStats, ...]) -> None:
        self.show(stages)
        for bar in self._bars.values():
            bar.close()


__all__ = ["StageLines"]
