"""report: every stage's outputs -> metrics/report.html, one self-contained page that opens offline."""
from pathlib import Path

from synthdrive import params, tracking
from synthdrive.errors import run_stage
from synthdrive.report import render_report

OUT = Path("metrics/report.html")


def main() -> None:
    cfg = params.load("report")
    with tracking.stage_run("report") as run:
        result = render_report(Path.cwd(), OUT, cfg.to_dict(), parent_run=run.parent_id)
        run.log_metrics({"report_sections": len(result["sections"]), "report_bytes": result["bytes"]})
        run.log_artifact(OUT)
        left = "; ".join(f"{i['title']}: {i['reason']}" for i in result["left_out"]) or "none"
        print(f"report: {OUT} ({result['bytes'] / 1e6:.1f} MB), sections {', '.join(result['sections'])}; "
              f"left out: {left}")


if __name__ == "__main__":
    run_stage(main)
