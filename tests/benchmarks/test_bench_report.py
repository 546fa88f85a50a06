"""`make bench`'s Markdown: every figure that carries a goal appears in one table, judged against it."""

from __future__ import annotations

import pytest


def test_goals_table_pairs_each_figure_with_its_goal_and_judges_it():
    from bench import to_markdown

    results = {
        "machine": {"device": "cpu"},
        "stages": {
            "bench_dag": {"full_recipe": {"dry_run_s": 12.5, "goal_dry_run_s": "<= 20"}, "wall_s": 30.0},
            "bench_latents": {
                "2d": {"pipeline_vs_bare": 0.91, "goal_pipeline_vs_bare": ">= 0.95"},
                "3d": {"pipeline_vs_bare": None, "goal_pipeline_vs_bare": ">= 0.95"},
            },
        },
    }
    markdown = to_markdown(results)
    assert "| bench_dag | full_recipe.dry_run_s | 12.5 | <= 20 | yes |" in markdown
    assert "| bench_latents | 2d.pipeline_vs_bare | 0.91 | >= 0.95 | **no** |" in markdown
    assert "| bench_latents | 3d.pipeline_vs_bare | - | >= 0.95 | not measured |" in markdown
    # the per-stage tables list the figures, not the goals again
    assert "| full_recipe.dry_run_s | 12.5 |" in markdown and "| full_recipe.goal_dry_run_s |" not in markdown


def test_a_goal_without_a_direction_is_refused():
    from bench import goal_met

    with pytest.raises(ValueError, match="'>= x' or '<= x'"):
        goal_met(1.0, "0.95")
