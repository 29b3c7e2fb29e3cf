"""The dashboard's pages: a Starlette application over one store, read-only.

Every page is rendered on the server from :class:`ProvStore` reads (Jinja2 templates in
``templates/``); charts are Plotly figures drawn by the ``plotly.min.js`` that the ``plotly``
package ships, served from here, so nothing is fetched from the internet. Each request opens
the store for reading and lets it go, as every other command does, so a training process can
write the same store meanwhile.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route
from starlette.templating import Jinja2Templates

from cnnprov.analysis.formatting import to_csv
from cnnprov.analysis.provstore import ProvStore
from cnnprov.errors import CnnprovError
from cnnprov.storage.location import StoreLocation
from cnnprov.ui import figures, parallel, sparql_page
from cnnprov.ui.importance import METHODS, importance
from cnnprov.ui.tables import compare, measures, runs_table

HERE = Path(__file__).resolve().parent
#: the files a run downloads as, and their media types
DOWNLOADS = {
    "turtle": ("ttl", "text/turtle"),
    "provn": ("provn", "text/provenance-notation"),
    "provjson": ("json", "application/json"),
}


def create_app(location: StoreLocation) -> Starlette:
    """The dashboard for the store at ``location`` (without the token guard: see :mod:`cnnprov.ui.server`)."""
    templates = Jinja2Templates(directory=str(HERE / "templates"))
    templates.env.filters["fmt"] = _format
    templates.env.globals.update(store_name=str(location), zip=zip)

    def page(request: Request, name: str, status: int = 200, **context: Any) -> Response:
        return templates.TemplateResponse(request, name, context, status_code=status)

    def guarded(render: Any) -> Any:
        """Show a cnnprov error (a bad filter, an unknown run) on the page instead of a stack trace."""

        def endpoint(request: Request) -> Response:
            try:
                # one opening of the store for all the reads of a page (each is a snapshot; the next request sees more)
                with ProvStore(location) as reader:
                    request.state.store = reader
                    return render(request)
            except CnnprovError as error:
                return page(request, "error.html", status=400, message=str(error))

        return endpoint

    def runs(request: Request) -> Response:
        query = request.query_params
        metric, order, where = query.get("metric", "val_acc"), query.get("order") or None, query.get("where", "")
        reader = request.state.store
        error = None
        try:
            table = runs_table(reader, metric, order, where or None)
        except CnnprovError as failure:  # a filter that does not parse: show it, with the unfiltered table
            error, table = str(failure), runs_table(reader, metric, order)
        return page(
            request,
            "runs.html",
            table=table,
            measures=measures(reader),
            where=where,
            error=error,
            show_all=query.get("all") == "1",
        )

    def curves_page(request: Request) -> Response:
        runs, metric = request.query_params.getlist("run"), request.query_params.get("metric", "val_acc")
        return page(
            request, "curves.html", plotly=True, runs=runs, metric=metric, measures=measures(request.state.store)
        )

    def curves_data(request: Request) -> Response:
        reader = request.state.store
        runs = [reader.resolve_run(run) for run in request.query_params.getlist("run")]
        names = {row["run_id"]: row["name"] for row in reader.runs()}
        return JSONResponse(figures.curves(reader, runs, request.query_params.get("metric", "val_acc"), names))

    def compare_page(request: Request) -> Response:
        runs = request.query_params.getlist("run")
        if len(runs) < 2:
            return page(request, "error.html", status=400, message="select at least two runs to compare")
        reader = request.state.store
        metric = request.query_params.get("metric", "val_acc")
        return page(
            request,
            "compare.html",
            plotly=True,
            comparison=compare(reader, runs),
            metric=metric,
            measures=measures(reader),
        )

    def explore(request: Request) -> Response:
        query = request.query_params
        reader = request.state.store
        table = runs_table(
            reader, query.get("metric", "val_acc"), query.get("order") or None, query.get("where") or None
        )
        x = query.get("x") or (table.varying[0] if table.varying else "")
        interactive = query.get("interactive") == "1"  # WebGL: brushable, but seconds to draw without a GPU
        lines = parallel.parallel_coordinates(table) if interactive else parallel.parallel_lines(table)
        return page(
            request,
            "explore.html",
            plotly=True,
            table=table,
            measures=measures(reader),
            where=query.get("where", ""),
            x=x,
            parallel=json.dumps(lines),
            interactive=interactive,
            parallel_runs=len(table.rows),
            scatter=json.dumps(figures.scatter(table, x)) if x else None,
            importance=importance(table),
            methods=METHODS,
        )

    def run_page(request: Request) -> Response:
        reader = request.state.store
        run = reader.resolve_run(request.path_params["run"])
        info = next(row for row in reader.runs() if row["run_id"] == run)
        sections = {
            "environment": reader.query("run-environment", run=run),
            "settings": reader.query("hyperparameters", run=run, include="all"),
            "layers": reader.query("layers", run=run),
            "learning-rate adaptations": reader.query("lr-adaptations", run=run),
            "checkpoints": reader.query("checkpoints", run=run),
            "resource use by epoch": reader.query("system-usage", run=run),
        }
        return page(request, "run.html", run=info, sections=sections, downloads=DOWNLOADS)

    def picture(request: Request) -> Response:
        from cnnprov.analysis.picture import run_picture

        return Response(run_picture(request.state.store, request.path_params["run"], "svg"), media_type="image/svg+xml")

    def download(request: Request) -> Response:
        format = request.path_params["format"]
        if format not in DOWNLOADS:
            return page(
                request, "error.html", status=404, message=f"no download as '{format}'; choose {', '.join(DOWNLOADS)}"
            )
        reader = request.state.store
        run = reader.resolve_run(request.path_params["run"])
        suffix, media = DOWNLOADS[format]
        headers = {"Content-Disposition": f'attachment; filename="run-{run}.{suffix}"'}
        return Response(reader.export(format, run=run), media_type=media, headers=headers)

    def studies(request: Request) -> Response:
        trials = request.state.store.query("study-trials")
        return page(
            request, "studies.html", plotly=True, trials=trials, figure=json.dumps(figures.study_choices(trials))
        )

    def sparql(request: Request) -> Response:
        return page(request, "sparql.html", **sparql_page.answer(request.state.store, request.query_params))

    def sparql_csv(request: Request) -> Response:
        answered = sparql_page.answer(request.state.store, request.query_params)
        if answered["result"] is None:
            message = answered["error"] or "ask a question (query=NAME) or send SPARQL (text=...)"
            return Response(f"{message}\n", status_code=400, media_type="text/plain; charset=utf-8")
        result = answered["result"]
        headers = {"Content-Disposition": 'attachment; filename="answer.csv"'}
        return Response(to_csv(result).encode(), media_type="text/csv", headers=headers)

    def plotly_js(request: Request) -> Response:
        import plotly

        path = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
        return FileResponse(path, media_type="text/javascript", headers={"Cache-Control": "max-age=86400"})

    def static(request: Request) -> Response:
        name = request.path_params["name"]
        path = HERE / "static" / name
        if name not in {"ui.css", "ui.js"}:
            return Response("not found", status_code=404)
        return FileResponse(path)

    routes = [
        Route("/", guarded(runs)),
        Route("/curves", guarded(curves_page)),
        Route("/api/curves", guarded(curves_data)),
        Route("/compare", guarded(compare_page)),
        Route("/explore", guarded(explore)),
        Route("/run/{run}", guarded(run_page)),
        Route("/run/{run}/picture.svg", guarded(picture)),
        Route("/run/{run}/download/{format}", guarded(download)),
        Route("/studies", guarded(studies)),
        Route("/sparql", guarded(sparql)),
        Route("/sparql.csv", guarded(sparql_csv)),
        Route("/static/plotly.min.js", plotly_js),
        Route("/static/{name}", static),
    ]
    return Starlette(routes=routes)


def _format(value: Any) -> str:
    """A cell as the tables show it: floats to 4 significant digits, None empty."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:.4g}"
    if hasattr(value, "strftime"):
        return str(value.strftime("%Y-%m-%d %H:%M:%S"))
    return str(value)
