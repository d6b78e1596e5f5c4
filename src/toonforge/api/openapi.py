"""The OpenAPI document: the contract of the HTTP API, built in one place.

The routes read their bodies themselves (JSON, multipart or urlencoded, numbers possibly
written as strings), so FastAPI cannot infer the request bodies, the authentication or the
answers from their signatures. This module describes them instead:

- the envelope and every endpoint's answer fields as pydantic models;
- the request body of every POST: static models for the task, catalog and private-model
  endpoints, and one `Run` body per catalog tool, generated from its manifest (types,
  bounds, options, defaults, required inputs), at one path per tool;
- the three authentication headers as security schemes (signature mode: all three; key
  mode: `x-api-key` alone; the catalog endpoints need none);
- the answers the server really gives (200, 401, 404, 413, 503, all in the envelope; never
  FastAPI's 422, which the server never sends);
- the WebSocket protocol, in the description and in the `x-websocket` extension.

An operation is in the document only when the app really has its route, so the document and
the app agree whatever routes a build has. `install(app)` sets `app.openapi` and serves
`/docs` and `/redoc` with their assets from this server (no CDN: they work offline).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

import fastapi.routing
from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse
from fastapi.routing import APIWebSocketRoute
from pydantic import BaseModel, ConfigDict, Field
from pydantic.json_schema import models_json_schema
from starlette.routing import WebSocketRoute

from toonforge import __version__
from toonforge.api.envelope import ApiError
from toonforge.catalog import Catalog, InputSpec, Manifest
from toonforge.catalog.validation import SEED_MAX
from toonforge.tasks import lifecycle as lc

SCHEMA_REF = "#/components/schemas/{model}"
RUN_ROUTE = "/v1/Run/{owner}/{model}"
SOCKET_PATH = "/v1/socket"
DOCS_URL = "/docs"
REDOC_URL = "/redoc"
ASSETS_URL = "/docs/assets"
# The docs' assets, as the fastapi-offline package ships them (Swagger UI 5, ReDoc 2).
ASSETS: dict[str, str] = {
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
    "redoc.standalone.js": "text/javascript; charset=utf-8",
    "favicon.png": "image/png",
}

JSON = "application/json"
FORM = "application/x-www-form-urlencoded"
MULTIPART = "multipart/form-data"

# A decimal number written as a string ("4", "0.8", "-1.5e3"), or an empty string (the
# input's default).
NUMBER_TEXT = r"^([-+]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][-+]?[0-9]+)?)?$"
INTEGER_TEXT = r"^([-+]?[0-9]+)?$"
DIGITS = r"^[0-9]+$"

# Security requirements: either alternative satisfies an operation (OpenAPI semantics), and
# all schemes inside one alternative are needed together.
SIGNED: list[dict[str, list[str]]] = [
    {"apiKey": [], "nonce": [], "signature": []},
    {"apiKey": []},
]
PUBLIC: list[dict[str, list[str]]] = []


# --------------------------------------------------------------------------------------------
# The envelope and the answers


class ErrorItem(BaseModel):
    """One error: `code` 0 general/validation, 1 not found, 96 concurrency limit reached,
    97 quota, 98 sign-in required, 99 bearer token invalid."""

    code: int
    message: str


class Envelope(BaseModel):
    """Every JSON answer: `result` and `errors`, then the endpoint's own fields (present when
    `result` is true)."""

    model_config = ConfigDict(extra="allow")

    result: bool
    errors: list[ErrorItem]


class RunAnswer(Envelope):
    taskid: str = Field("", description="The new task's id (digits, as a string).")
    socketaccesstoken: str = Field(
        "", description="The task token: for Task/* (`tasktoken`) and the WebSocket."
    )


class OutputFile(BaseModel):
    model_config = ConfigDict(extra="allow")

    id: str = Field(description="The file's id.")
    name: str = Field(description="`0.png`, `1.png`, … or `0.mp4`.")
    contenttype: str
    parentid: str
    uuid: str
    size: str = Field(description="Bytes, as a string.")
    addedtime: str
    modifiedtime: str
    accesskey: str
    url: str = Field(description="Absolute URL of the file (`/v1/File/{accesskey}/{name}`).")


class CallbackDeliveryRecord(BaseModel):
    model_config = ConfigDict(extra="allow")

    url: str
    state: str
    attempts: str
    lasterror: str


class TaskRecord(BaseModel):
    """A task as the API shows it. Numbers and unix times are strings; `0` is "not yet"."""

    model_config = ConfigDict(extra="allow")

    id: str
    uuid: str
    socketaccesstoken: str
    parameters: dict[str, Any] = Field(description="The inputs as run (defaults filled in).")
    debugoutput: str
    debugerror: str
    status: str = Field(description="The last lifecycle status: " + ", ".join(lc.ORDER))
    pexit: str = Field(description='"0" for a success; non-zero for a failure or a kill.')
    starttime: str
    endtime: str
    elapsedseconds: str
    createtime: str
    canceltime: str
    assigntime: str
    accepttime: str
    preprocessstarttime: str
    preprocessendtime: str
    postprocessstarttime: str
    postprocessendtime: str
    cps: str = Field(description="Cost per second of run time.")
    totalcost: str = Field(description="cps × elapsedseconds for a success, otherwise 0.")
    projectid: str
    modelid: str
    modelslugowner: str
    modelslugproject: str
    modeldescription: str
    callbackurl: str
    categories: str = Field(description="The tool's categories, as a JSON text.")
    outputs: list[OutputFile]
    size: str = Field(description="Total bytes of the outputs.")
    callbacks: list[CallbackDeliveryRecord] = Field(
        default_factory=list, description="Callback deliveries (when Run had a callbackUrl)."
    )


class TaskAnswer(Envelope):
    total: str = Field("", description="Number of tasks in `tasklist` (Task/Detail).")
    tasklist: list[TaskRecord] = Field(default_factory=list)


class ToolRecord(BaseModel):
    """A catalog tool. `parameters` (its inputs) and `inspire` (example inputs) are left
    out by Tool/List's `summary`."""

    model_config = ConfigDict(extra="allow")

    id: str
    title: str
    slugowner: str
    slugproject: str
    cleanslugowner: str
    cleanslugproject: str
    description: str
    cover: str
    categories: list[str]
    tags: list[str]
    cps: str
    price: str
    pricetype: str
    engineready: bool
    enginenote: str
    offlinemode: bool
    offlinenote: str = ""
    triggerwords: list[str]
    parameters: list[InputSpec] = Field(default_factory=list)
    inspire: list[dict[str, Any]] = Field(default_factory=list)


class ToolAnswer(Envelope):
    total: str = Field("", description="Number of matching tools (Tool/List).")
    tool: list[ToolRecord] = Field(default_factory=list)


class ExploreGroup(BaseModel):
    model_config = ConfigDict(extra="allow")

    id: str
    title: str
    total: str
    tools: list[ToolRecord]


class ExploreAnswer(Envelope):
    explore: list[ExploreGroup] = Field(default_factory=list)


class PrivateModelRecord(BaseModel):
    model_config = ConfigDict(extra="allow")

    id: str = Field(description="The value to send as AnimateDiff's `selectedModelPrivate`.")
    name: str
    family: str
    filename: str
    size: str
    sha256: str
    createtime: str


class PrivateModelAnswer(Envelope):
    total: str = Field("", description="Number of models (PrivateModel/List).")
    models: list[PrivateModelRecord] = Field(default_factory=list)


class UploadedFile(BaseModel):
    model_config = ConfigDict(extra="allow")

    id: str
    name: str
    contenttype: str
    size: str
    url: str


class UploadAnswer(Envelope):
    files: list[UploadedFile] = Field(default_factory=list, alias="list")


class Health(BaseModel):
    model_config = ConfigDict(extra="allow")

    result: bool
    offlinemode: bool = False
    version: str = ""


# --------------------------------------------------------------------------------------------
# Request bodies (the catalog's Run bodies are generated from the manifests further down)

Count = Annotated[int, Field(ge=0)] | Annotated[str, Field(pattern=r"^([0-9]+)?$")]
TaskId = Annotated[int, Field(ge=0)] | Annotated[str, Field(pattern=DIGITS)]

_ONE_OF_TASK_REFS = {
    "anyOf": [
        {"required": ["taskid"]},
        {"required": ["tasktoken"]},
        {"required": ["socketaccesstoken"]},
    ]
}


class TaskRefBody(BaseModel):
    """Which task: `taskid`, or its token as `tasktoken` (or `socketaccesstoken`, the same).
    `taskid` wins when both are sent. Another project's task is "There is no task yet."."""

    model_config = ConfigDict(extra="allow", json_schema_extra=_ONE_OF_TASK_REFS)

    taskid: TaskId | None = Field(None, description="The task's id (digits).")
    tasktoken: str | None = Field(None, description="The task's socketaccesstoken.")
    socketaccesstoken: str | None = Field(None, description="Same as `tasktoken`.")


class ToolListBody(BaseModel):
    model_config = ConfigDict(extra="allow")

    start: Count = Field(0, description="Offset of the first tool.")
    limit: Count = Field(20, description="Page size (at most 1000 are returned).")
    search: str = Field("", description="Text searched in title, description, tags, categories.")
    sort: Literal["id", "title", "slugowner", "slugproject", ""] = "id"
    order: Literal["ASC", "DESC", "asc", "desc", ""] = "ASC"
    categories: str | list[str] = Field(
        "", description="Categories the tool must all have: a list or a comma-separated text."
    )
    tags: str | list[str] = Field(
        "", description="Tags the tool must all have: a list or a comma-separated text."
    )
    slugowner: str = Field("", description="Only this owner's tools.")
    summary: bool | str = Field(
        False, description='true (or "1", "true", "yes"): leave out parameters and inspire.'
    )


class ToolDetailBody(BaseModel):
    model_config = ConfigDict(extra="allow")

    slugowner: str = Field(min_length=1, description="As on the page, or the clean slug.")
    slugproject: str = Field(
        min_length=1, description="As on the page (`CartoonMix v1.0`) or clean (`cartoonmix-v1-0`)."
    )


class ToolExploreBody(BaseModel):
    model_config = ConfigDict(extra="allow")


class TaskListBody(BaseModel):
    model_config = ConfigDict(extra="allow")

    type: str = Field("", description="Which tasks (for example by status).")
    sort: str = Field("", description="Field to sort by.")
    order: Literal["ASC", "DESC", "asc", "desc", ""] = "DESC"
    start: Count = Field(0, description="Offset of the first task.")
    limit: Count = Field(20, description="Page size.")
    modelName: str = Field("", description="Only tasks of this tool (owner/slug).")


class EmptyBody(BaseModel):
    """No field is needed; an empty body (or `{}`) is fine."""

    model_config = ConfigDict(extra="allow")


class PrivateModelDeleteBody(BaseModel):
    model_config = ConfigDict(
        extra="allow", json_schema_extra={"anyOf": [{"required": ["id"]}, {"required": ["name"]}]}
    )

    id: TaskId | None = Field(None, description="The model's id (PrivateModel/List).")
    name: str | None = Field(None, description="Or the model's name.")


class PrivateModelAddForm(BaseModel):
    name: str = Field(min_length=1, description="A name of your choice, unique in the project.")
    file: bytes = Field(
        json_schema_extra={"format": "binary"},
        description="A single-file SD 1.5 `.safetensors` checkpoint (UNet, VAE and CLIP).",
    )


class FileUploadForm(BaseModel):
    file: bytes = Field(json_schema_extra={"format": "binary"}, description="The file.")


# --------------------------------------------------------------------------------------------
# The WebSocket's messages


class SocketTaskInfo(BaseModel):
    """What the client sends: follow one task."""

    type: Literal["task_info"]
    tasktoken: str = Field(description="The task's socketaccesstoken (Run's answer).")


class SocketProgress(BaseModel):
    """The `message` of a `task_output` progress frame."""

    model_config = ConfigDict(extra="allow")

    type: str = Field(description="`progressGenerate`.")
    task: str
    percentage: str
    stepCurrent: str
    stepTotal: str
    speed: str
    speedType: str
    elapsedTime: str
    remainingTime: str


class SocketEvent(BaseModel):
    """One frame per lifecycle event of the task."""

    type: str = Field(description="The status: " + ", ".join([*lc.ORDER, lc.ERROR, lc.CANCEL]))
    id: str = Field(description="The task's id.")
    tasktoken: str
    message: SocketProgress | list[OutputFile] | str | None = Field(
        description="null for lifecycle events, progress for `task_output`, the outputs list "
        "for `task_postprocess_end`, a log line for `task_error`."
    )
    result: Literal[True]


class SocketError(BaseModel):
    """A message the server could not use (not JSON, not task_info), or an unknown token
    (`type` task_info, message "There is no task yet.")."""

    type: str
    result: Literal[False]
    message: str
    tasktoken: str = ""


# --------------------------------------------------------------------------------------------
# Operations


@dataclass(frozen=True)
class Operation:
    path: str
    method: str
    tag: str
    summary: str
    description: str
    answer: type[BaseModel] | None
    body: type[BaseModel] | None = None
    media: tuple[str, ...] = (JSON, FORM, MULTIPART)
    signed: bool = True
    extra_responses: dict[str, Any] = field(default_factory=dict)


def _fmt(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


TASK_REF_NOTE = (
    " Errors (HTTP 200, `result` false): code 0 `taskid or socketaccesstoken is required`; "
    "code 1 `There is no task yet.` (unknown, or another project's task)."
)

OPERATIONS: tuple[Operation, ...] = (
    Operation(
        "/v1/Task/Detail",
        "post",
        "Task",
        "A task's record",
        "The task with its status, parameters, times, cost and outputs." + TASK_REF_NOTE,
        TaskAnswer,
        TaskRefBody,
    ),
    Operation(
        "/v1/Task/Cancel",
        "post",
        "Task",
        "Cancel a queued task",
        "Removes a task no worker has taken yet; it ends in `task_cancel`. Otherwise code 1 "
        "`Task is not in a cancellable state.`." + TASK_REF_NOTE,
        TaskAnswer,
        TaskRefBody,
    ),
    Operation(
        "/v1/Task/Kill",
        "post",
        "Task",
        "Stop a running task",
        "Stops a task a worker has taken; it ends in `task_cancel` (the answer waits up to "
        "10 s for it). A queued task: code 1 `Task could not be killed: …` (use Task/Cancel)."
        + TASK_REF_NOTE,
        TaskAnswer,
        TaskRefBody,
    ),
    Operation(
        "/v1/Task/InputOutputDelete",
        "post",
        "Task",
        "Delete a finished task's files",
        "Deletes the output (and input) files of a terminal task and keeps its record "
        "(`outputs` becomes empty); idempotent. A running task: code 0 `Task must be "
        "completed or cancelled before deleting files`." + TASK_REF_NOTE,
        TaskAnswer,
        TaskRefBody,
    ),
    Operation(
        "/v1/Task/List",
        "post",
        "Task",
        "The project's tasks",
        "A page of the calling project's tasks.",
        TaskAnswer,
        TaskListBody,
    ),
    Operation(
        "/v1/Tool/List",
        "post",
        "Tool",
        "The catalog",
        "Tools matching the filters; no authentication (the catalog is public). Errors: "
        "`Request parameter [sort] must be one of: …`, `… [order] …`, `… [start] must be "
        "integer or float`.",
        ToolAnswer,
        ToolListBody,
        signed=False,
    ),
    Operation(
        "/v1/Tool/Detail",
        "post",
        "Tool",
        "One tool with its inputs",
        "The tool with `parameters` (its inputs, as the Run body below describes them) and "
        "`inspire` (example inputs); no authentication. Unknown tool: code 1 "
        "`slug-owner-project-not-exist`.",
        ToolAnswer,
        ToolDetailBody,
        signed=False,
    ),
    Operation(
        "/v1/Tool/Explore",
        "post",
        "Tool",
        "The catalog in groups",
        "Tools grouped (for example by category); no authentication.",
        ExploreAnswer,
        ToolExploreBody,
        signed=False,
    ),
    Operation(
        "/v1/PrivateModel/Add",
        "post",
        "PrivateModel",
        "Upload a private base model",
        "A single-file SD 1.5 checkpoint for AnimateDiff's `selectedModelPrivate`, checked "
        "without loading it (UNet, VAE and CLIP weights in the LDM key layout), at most "
        "`TOONFORGE_PRIVATE_MODEL_MAX_GB`. Multipart only.",
        PrivateModelAnswer,
        PrivateModelAddForm,
        media=(MULTIPART,),
    ),
    Operation(
        "/v1/PrivateModel/List",
        "post",
        "PrivateModel",
        "The project's private models",
        "Only the calling project's models.",
        PrivateModelAnswer,
        EmptyBody,
    ),
    Operation(
        "/v1/PrivateModel/Delete",
        "post",
        "PrivateModel",
        "Delete a private model",
        "By `id` or `name`; another project's model: code 1 `Private model not found.`.",
        PrivateModelAnswer,
        PrivateModelDeleteBody,
    ),
    Operation(
        "/v1/File/Upload",
        "post",
        "File",
        "Upload a file",
        "Stores a file (multipart `file`) and answers its URL, for inputs that take a file.",
        UploadAnswer,
        FileUploadForm,
        media=(MULTIPART,),
    ),
)


# --------------------------------------------------------------------------------------------
# Run bodies from the manifests


def _number_schema(spec: InputSpec) -> dict[str, Any]:
    whole = spec.integer
    bounds: dict[str, Any] = {}
    if spec.min is not None:
        bounds["minimum"] = int(spec.min) if whole else spec.min
    if spec.max is not None:
        bounds["maximum"] = int(spec.max) if whole else spec.max
    if spec.multiple_of:
        bounds["multipleOf"] = spec.multiple_of
    as_number = {"type": "integer" if whole else "number", **bounds}
    as_text = {
        "type": "string",
        "pattern": INTEGER_TEXT if whole else NUMBER_TEXT,
        "description": "The same number written as a string, within the same bounds; "
        "an empty string takes the default.",
    }
    return {"anyOf": [as_number, as_text]}


def _seed_schema() -> dict[str, Any]:
    return {
        "anyOf": [
            {"type": "integer", "minimum": 0, "maximum": SEED_MAX},
            {"type": "string", "pattern": r"^([0-9]{1,16})?$"},
        ],
    }


def _select_schema(spec: InputSpec) -> dict[str, Any]:
    values = [o.value for o in spec.options or []]
    if not values:  # options that depend on the caller (animate-diff's selectedModelPrivate)
        return {
            "type": "string",
            "description": "Options are per project: for `selectedModelPrivate`, the `id` (or "
            "name) of one of the calling project's private models (PrivateModel/List); empty "
            "for none. Another project's model is refused as not found.",
        }
    # An empty value takes the default (the page's own snippets send ""), and the page's
    # default is accepted even where it is not among the options (animate-diff's "60").
    allowed = list(dict.fromkeys([*values, str(spec.default), ""]))
    return {"type": "string", "enum": allowed}


def input_schema(spec: InputSpec) -> dict[str, Any]:
    """The JSON schema of one tool input, with the bounds the server enforces."""
    if spec.seed:
        schema = _seed_schema()
    elif spec.type in ("number", "float", "range"):
        schema = _number_schema(spec)
    elif spec.type == "select":
        schema = _select_schema(spec)
    elif spec.type == "checkbox":
        schema = {"anyOf": [{"type": "boolean"}, {"type": "string"}]}
    else:  # text, textarea, file (a URL or a name)
        schema = {"type": "string"}
        if spec.max_length is not None:
            schema["maxLength"] = spec.max_length
        if spec.required:
            schema["pattern"] = r"\S"
    notes = [f"Page label `{spec.label}` ({spec.type})."]
    if spec.seed:
        notes.append(
            f"An integer 0..{SEED_MAX} (or as a string); empty picks a random seed. "
            "Sample i uses seed + i."
        )
    elif spec.type in ("number", "float", "range"):
        lo = _fmt(spec.min) if spec.min is not None else "-inf"
        hi = _fmt(spec.max) if spec.max is not None else "inf"
        kind = "An integer" if spec.integer else "A number"
        notes.append(f"{kind} between {lo} and {hi}.")
        if spec.multiple_of:
            notes.append(f"A multiple of {spec.multiple_of}.")
    elif spec.type == "select" and spec.options:
        labels = ", ".join(f"`{json.dumps(o.value)}` ({o.label})" for o in spec.options)
        notes.append(f"Options: {labels}; empty takes the default.")
    if spec.max_length is not None:
        notes.append(f"At most {spec.max_length} characters.")
    schema["description"] = " ".join(
        ([schema["description"]] if "description" in schema else []) + notes
    )
    schema["default"] = spec.default
    return schema


def _schema_name(manifest: Manifest, suffix: str = "") -> str:
    raw = f"Run.{manifest.cleanslugowner}.{manifest.cleanslug}{suffix}"
    return re.sub(r"[^A-Za-z0-9._-]", "_", raw)


def run_body_schema(manifest: Manifest, *, form: bool = False) -> dict[str, Any]:
    """One tool's Run body. Inputs the tool does not declare are accepted and kept in the
    task's parameters (unused), so the object is open."""
    props: dict[str, Any] = {s.name: input_schema(s) for s in manifest.inputs}
    props["callbackUrl"] = {
        "type": "string",
        "description": "Optional: an http(s) URL that gets the task record (POST, Standard "
        "Webhooks signature) when the task ends. Private and loopback addresses are refused "
        "unless the operator allows them; anything else is recorded as refused and the task "
        "runs normally.",
    }
    props["projectid"] = {
        "anyOf": [{"type": "string"}, {"type": "integer"}],
        "description": "Optional, accepted and not used: the project is the key's.",
    }
    schema: dict[str, Any] = {
        "type": "object",
        "title": f"Run {manifest.key}",
        "description": f"The inputs of {manifest.key}: absent inputs take their defaults; "
        "numbers may be written as strings. Inputs the tool does not declare are kept in the "
        "task's parameters and not used." + (" Form fields are all text." if form else ""),
        "properties": props,
        "additionalProperties": {"type": "string"} if form else True,
    }
    required = [s.name for s in manifest.inputs if s.required]
    if required:
        schema["required"] = required
    return schema


def run_example(manifest: Manifest) -> dict[str, Any]:
    example = {s.name: s.default for s in manifest.inputs}
    if manifest.inspire:
        example.update(manifest.inspire[0])
    return example


# --------------------------------------------------------------------------------------------
# The document

ENVELOPE_REF = {"$ref": SCHEMA_REF.format(model="Envelope")}


def _envelope_response(description: str, example_message: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {
            JSON: {
                "schema": ENVELOPE_REF,
                "example": {"result": False, "errors": [{"code": 0, "message": example_message}]},
            }
        },
    }


RESPONSES_COMMON: dict[str, Any] = {
    "404": _envelope_response(
        "Unknown endpoint or method (`Error parsing url.`).", "Error parsing url."
    ),
    "413": _envelope_response("The request body is too large.", "Request body is too large."),
    "503": _envelope_response(
        "The server cannot take the request now (starting, stopping, overloaded or its "
        "database is unreachable); retry later.",
        "Service unavailable.",
    ),
}
RESPONSE_401 = _envelope_response(
    "Authentication failed: unknown key (`Project authorization is not founded.`), missing "
    "signature headers, wrong signature (`Project authorization is not valid.`), a nonce "
    "already used, or a caller IP outside the project's allow-list.",
    "Project authorization is not founded.",
)


def _answer_response(answer: type[BaseModel], description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {JSON: {"schema": {"$ref": SCHEMA_REF.format(model=answer.__name__)}}},
    }


def _operation(op: Operation, op_id: str) -> dict[str, Any]:
    out: dict[str, Any] = {
        "tags": [op.tag],
        "summary": op.summary,
        "description": op.description,
        "operationId": op_id,
        "security": SIGNED if op.signed else PUBLIC,
    }
    if op.body is not None:
        ref = {"$ref": SCHEMA_REF.format(model=op.body.__name__)}
        out["requestBody"] = {
            "required": op.media == (MULTIPART,),
            "description": _media_note(op.media),
            "content": {m: {"schema": ref} for m in op.media},
        }
    responses: dict[str, Any] = {}
    if op.answer is not None:
        responses["200"] = _answer_response(
            op.answer,
            "The envelope: `result` true with the fields below, or `result` false with "
            "`errors` for a problem with the request's content (validation, not found).",
        )
    if op.signed:
        responses["401"] = RESPONSE_401
    responses.update(op.extra_responses)
    responses.update(RESPONSES_COMMON)
    out["responses"] = responses
    return out


def _media_note(media: tuple[str, ...]) -> str:
    if media == (MULTIPART,):
        return "multipart/form-data."
    return (
        "JSON (`application/json`) is the primary content type. The same fields may be sent "
        "as multipart/form-data or application/x-www-form-urlencoded; a body that is JSON is "
        "read as JSON whatever its Content-Type says. Numbers may be written as strings."
    )


def _run_operations(catalog: Catalog) -> dict[str, dict[str, Any]]:
    paths: dict[str, dict[str, Any]] = {}
    for m in catalog:
        op_id = "run_" + re.sub(r"[^A-Za-z0-9]+", "_", f"{m.cleanslugowner}_{m.cleanslug}")
        ref = {"$ref": SCHEMA_REF.format(model=_schema_name(m))}
        form_ref = {"$ref": SCHEMA_REF.format(model=_schema_name(m, ".form"))}
        readiness = (
            ""
            if m.engine_ready
            else f" Not runnable on this server (code 1 `tool-not-accessible`): {m.engine_note}"
        )
        op: dict[str, Any] = {
            "tags": ["Run"],
            "summary": f"Run {m.key}",
            "description": f"{m.description}\n\nQueues a task of `{m.key}`; the answer "
            "carries its `taskid` and `socketaccesstoken` (follow it with Task/Detail or the "
            f"WebSocket). The slug may also be written as on the tool page (`{m.owner}/"
            f"{m.slug}`, URL-encoded). Validation errors (HTTP 200, `result` false) name the "
            "input, one error per violation, and nothing is queued: `Request parameter "
            "[steps] must be between 1 and 150`. Over the project's limit of unfinished "
            f"tasks: code 96.{readiness}",
            "operationId": op_id,
            "security": SIGNED,
            "requestBody": {
                "required": False,
                "description": _media_note((JSON, FORM, MULTIPART)),
                "content": {
                    JSON: {"schema": ref, "example": run_example(m)},
                    FORM: {"schema": form_ref},
                    MULTIPART: {"schema": form_ref},
                },
            },
            "responses": {
                "200": _answer_response(RunAnswer, "The envelope with the new task's id."),
                "401": RESPONSE_401,
                **RESPONSES_COMMON,
            },
        }
        paths[f"/v1/Run/{m.cleanslugowner}/{m.cleanslug}"] = {"post": op}
    return paths


def _file_operations() -> dict[str, Any]:
    params = [
        {
            "name": "accesskey",
            "in": "path",
            "required": True,
            "schema": {"type": "string"},
            "description": "The file's access key (the capability: no other authentication).",
        },
        {
            "name": "name",
            "in": "path",
            "required": True,
            "schema": {"type": "string"},
            "description": "The file's name (`0.png`, `0.mp4`).",
        },
    ]
    binary = {"schema": {"type": "string", "format": "binary"}}
    not_found = _envelope_response(
        "No such file (or its task's files were deleted).", "File not found."
    )
    get = {
        "tags": ["File"],
        "summary": "An output file",
        "description": "The URL that task records give in `outputs[].url`.",
        "operationId": "file_get",
        "security": PUBLIC,
        "parameters": params,
        "responses": {
            "200": {
                "description": "The file.",
                "content": {
                    "image/png": binary,
                    "video/mp4": binary,
                    "application/octet-stream": binary,
                },
            },
            **RESPONSES_COMMON,
            "404": not_found,
        },
    }
    head = {
        **get,
        "summary": "An output file's headers",
        "operationId": "file_head",
        "responses": {
            "200": {"description": "The file's headers, no body."},
            **RESPONSES_COMMON,
            "404": {"description": "No such file (no body)."},
        },
    }
    return {"get": get, "head": head}


def _health_operation() -> dict[str, Any]:
    return {
        "get": {
            "tags": ["Server"],
            "summary": "Liveness",
            "description": "No authentication. Whether the server runs, in offline mode or not.",
            "operationId": "healthz",
            "security": PUBLIC,
            "responses": {
                "200": _answer_response(Health, "The server answers."),
                **RESPONSES_COMMON,
            },
        }
    }


SOCKET_DOC = f"""
## WebSocket ({SOCKET_PATH})

`ws://HOST:PORT{SOCKET_PATH}` (`wss://` behind TLS), on the same server as the API. No
authentication header: the task token is the capability.

1. The client sends a JSON text `{{"type": "task_info", "tasktoken": TOKEN}}` (TOKEN is Run's
   `socketaccesstoken`).
2. The server answers with the task's current status first (a late subscriber misses
   nothing), then one frame per event, until a terminal status
   (`task_postprocess_end` or `task_cancel`):
   `{{"type": STATUS, "id": TASKID, "tasktoken": TOKEN, "message": …, "result": true}}`.
   - `message` is null for lifecycle events ({", ".join(f"`{s}`" for s in lc.ORDER)});
   - for `task_output` it is progress: `{{"type": "progressGenerate", "task": "Generate",
     "percentage": "60", "stepCurrent": "6", "stepTotal": "10", "speed": "1.2",
     "speedType": "it/s", "elapsedTime": "5s", "remainingTime": "3s"}}`;
   - for `task_postprocess_end` it is the outputs list (as in Task/Detail);
   - `task_error` carries a log line (not a failure), `task_cancel` ends a killed or
     cancelled task.
3. An unknown token: `{{"type": "task_info", "tasktoken": TOKEN, "result": false,
   "message": "There is no task yet."}}`. A message that is not JSON or not `task_info`:
   `{{"type": "error", "result": false, "message": …}}`. The socket stays open for another
   `task_info`.

The extension `x-websocket` of this document gives the same in machine-readable form (its
message schemas are in `components.schemas`: `SocketTaskInfo`, `SocketEvent`,
`SocketProgress`, `SocketError`).
"""

DESCRIPTION = f"""
toonforge speaks the Wiro task API: an existing client changes only its base URL.
Every endpoint is `POST` under `/v1` (the output files and `/healthz` are `GET`).

## Requests

JSON (`application/json`) is the primary content type. Bodies may also be
`multipart/form-data` or `application/x-www-form-urlencoded`; a body that is JSON is read as
JSON whatever its `Content-Type` says. Numbers may be written as strings (`"scale": "4"`).

`Run` has one path per catalog tool, `/v1/Run/OWNER/SLUG`, each with that tool's inputs
(types, bounds, options, defaults). The tool page's own slug (`CartoonMix%20v1.0`) works as
well as the clean one listed here.

## Authentication

A project has an API key and an API secret, and one mode fixed when it is created:

- **signature**: `x-api-key`, `x-nonce` and `x-signature`, where
  `x-signature = hex(HMAC_SHA256(key=API_KEY, message=API_SECRET + NONCE))`. A nonce (a unix
  time or any integer) is accepted once per key: make a new one, and its signature, for each
  request.
- **key only**: `x-api-key` alone.

`Tool/List`, `Tool/Detail`, the output files and `/healthz` need no authentication.
Authentication failures answer HTTP 401.

## Answers

Every JSON answer is the envelope `{{"result": bool, "errors": [{{"code", "message"}}], …}}`;
numbers inside records are strings. HTTP 200 for successes and for errors about the
request's content (validation, not found, not cancellable: `result` false), 401 for
authentication, 404 (`Error parsing url.`) for an unknown endpoint, 413 for a body that is too
large, 503 when the server cannot take the request now. Error codes: 0 general/validation,
1 not found, 96 concurrency limit reached, 97 quota, 98 sign-in required, 99 bearer token
invalid. The server never answers 422.
{SOCKET_DOC}"""


def _x_websocket() -> dict[str, Any]:
    def ref(name: str) -> dict[str, str]:
        return {"$ref": SCHEMA_REF.format(model=name)}

    return {
        "path": SOCKET_PATH,
        "url": f"ws://HOST:PORT{SOCKET_PATH}",
        "authentication": "none: the task token is the capability",
        "send": {"task_info": ref("SocketTaskInfo")},
        "receive": {
            "event": ref("SocketEvent"),
            "progress": ref("SocketProgress"),
            "error": ref("SocketError"),
        },
        "statuses": [*lc.ORDER, lc.ERROR, lc.ERROR_FULL, lc.CANCEL],
        "terminal": sorted(lc.TERMINAL),
        "first_frame": "the task's current status",
    }


ANSWERS: tuple[type[BaseModel], ...] = (
    Envelope,
    RunAnswer,
    TaskAnswer,
    ToolAnswer,
    ExploreAnswer,
    PrivateModelAnswer,
    UploadAnswer,
    Health,
    SocketEvent,
    SocketError,
)
BODIES: tuple[type[BaseModel], ...] = (
    TaskRefBody,
    ToolListBody,
    ToolDetailBody,
    ToolExploreBody,
    TaskListBody,
    EmptyBody,
    PrivateModelDeleteBody,
    PrivateModelAddForm,
    FileUploadForm,
    SocketTaskInfo,
)


def _strip_defaults(schema: Any) -> Any:
    """Answers have no defaults: the optional fields of an answer model are optional, not
    defaulted (they are absent when `result` is false). Only the `default` keyword goes:
    a property that is itself named `default` (InputSpec's) stays."""
    if isinstance(schema, list):
        return [_strip_defaults(v) for v in schema]
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key == "default":
            continue
        if key in ("properties", "$defs", "patternProperties"):
            out[key] = {name: _strip_defaults(sub) for name, sub in value.items()}
        else:
            out[key] = _strip_defaults(value)
    return out


def _component_schemas() -> dict[str, Any]:
    _, answers = models_json_schema(
        [(m, "serialization") for m in ANSWERS], ref_template=SCHEMA_REF
    )
    _, bodies = models_json_schema([(m, "validation") for m in BODIES], ref_template=SCHEMA_REF)
    schemas = {k: _strip_defaults(v) for k, v in answers.get("$defs", {}).items()}
    for name, schema in bodies.get("$defs", {}).items():
        schemas.setdefault(name, schema)
    return schemas


def app_routes(app: FastAPI) -> set[tuple[str, str]]:
    """(path, method) of every HTTP route the app has; (path, "websocket") for sockets."""
    # FastAPI >= 0.16x keeps included routers as lazy branches: iter_route_contexts walks
    # them. Older versions list every route in app.routes.
    walk = getattr(fastapi.routing, "iter_route_contexts", None)
    routes: list[Any] = list(walk(app.routes)) if walk is not None else list(app.routes)
    found: set[tuple[str, str]] = set()
    for route in routes:
        path = getattr(route, "path", None)
        if path is None:
            continue
        methods = getattr(route, "methods", None)
        original = getattr(route, "original_route", route)
        if methods:
            found.update((path, m.lower()) for m in methods)
        elif isinstance(original, WebSocketRoute | APIWebSocketRoute):
            found.add((path, "websocket"))
    return found


def build_openapi(app: FastAPI, catalog: Catalog) -> dict[str, Any]:
    routes = app_routes(app)
    paths: dict[str, dict[str, Any]] = {}
    if (RUN_ROUTE, "post") in routes:
        paths.update(_run_operations(catalog))
    for op in OPERATIONS:
        if (op.path, op.method) in routes:
            op_id = re.sub(r"[^A-Za-z0-9]+", "_", op.path.removeprefix("/v1/")).lower()
            paths.setdefault(op.path, {})[op.method] = _operation(op, op_id)
    file_ops = _file_operations()
    for method, spec in file_ops.items():
        if ("/v1/File/{accesskey}/{name}", method) in routes:
            paths.setdefault("/v1/File/{accesskey}/{name}", {})[method] = spec
    if ("/healthz", "get") in routes:
        paths["/healthz"] = _health_operation()

    schemas = _component_schemas()
    for m in catalog:
        schemas[_schema_name(m)] = run_body_schema(m)
        schemas[_schema_name(m, ".form")] = run_body_schema(m, form=True)

    doc: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {
            "title": app.title,
            "version": app.version or __version__,
            "description": DESCRIPTION
            if (SOCKET_PATH, "websocket") in routes
            else DESCRIPTION.replace(SOCKET_DOC, ""),
        },
        "paths": paths,
        "components": {
            "schemas": dict(sorted(schemas.items())),
            "securitySchemes": {
                "apiKey": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "x-api-key",
                    "description": "The project's API key (alone in key-only mode).",
                },
                "nonce": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "x-nonce",
                    "description": "Signature mode: a fresh integer (e.g. the unix time) per "
                    "request; a nonce is accepted once per key.",
                },
                "signature": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "x-signature",
                    "description": "Signature mode: "
                    "hex(HMAC_SHA256(key=API_KEY, message=API_SECRET + NONCE)).",
                },
            },
        },
        "tags": [
            {"name": "Run", "description": "Queue a task: one path per catalog tool."},
            {"name": "Task", "description": "Follow, cancel, kill a task; delete its files."},
            {"name": "Tool", "description": "The catalog (public)."},
            {"name": "PrivateModel", "description": "A project's own base models."},
            {"name": "File", "description": "Files."},
            {"name": "Server", "description": "The server itself."},
        ],
    }
    if (SOCKET_PATH, "websocket") in routes:
        doc["x-websocket"] = _x_websocket()
    return doc


# --------------------------------------------------------------------------------------------
# Installing it: app.openapi, /docs, /redoc and their assets


def assets_dir() -> Path:
    return Path(str(resources.files("fastapi_offline") / "static"))


def install(app: FastAPI, catalog_of: Callable[[], Catalog]) -> None:
    """Serve the document at `app.openapi_url` and the docs pages from local assets.

    Create the app with `docs_url=None, redoc_url=None` (FastAPI's own pages load their
    assets from a CDN). The document is built once, on first use, after every route is in."""
    cache: dict[str, Any] = {}

    def openapi() -> dict[str, Any]:
        if "doc" not in cache:
            cache["doc"] = build_openapi(app, catalog_of())
        app.openapi_schema = cache["doc"]
        return cache["doc"]  # type: ignore[no-any-return]

    app.openapi = openapi  # type: ignore[method-assign]
    openapi_url = app.openapi_url or "/openapi.json"
    folder = assets_dir()

    @app.api_route(ASSETS_URL + "/{name}", methods=["GET", "HEAD"], include_in_schema=False)
    def docs_asset(name: str) -> FileResponse:
        media = ASSETS.get(name)
        if media is None:
            raise ApiError("Error parsing url.", status=404)
        return FileResponse(
            folder / name, media_type=media, headers={"Cache-Control": "public, max-age=86400"}
        )

    @app.get(DOCS_URL, include_in_schema=False)
    def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_swagger_ui_html(
            openapi_url=root + openapi_url,
            title=f"{app.title} API",
            swagger_js_url=f"{root}{ASSETS_URL}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{ASSETS_URL}/swagger-ui.css",
            swagger_favicon_url=f"{root}{ASSETS_URL}/favicon.png",
            oauth2_redirect_url=None,
            # No validator badge: it would call an outside service.
            swagger_ui_parameters={"validatorUrl": None, "displayRequestDuration": True},
        )

    @app.get(REDOC_URL, include_in_schema=False)
    def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_redoc_html(
            openapi_url=root + openapi_url,
            title=f"{app.title} API",
            redoc_js_url=f"{root}{ASSETS_URL}/redoc.standalone.js",
            redoc_favicon_url=f"{root}{ASSETS_URL}/favicon.png",
            with_google_fonts=False,
        )
