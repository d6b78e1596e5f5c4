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
from dataclasses import dataclass
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
from toonforge.api import body as request_body
from toonforge.api import routes_task_list, routes_tool
from toonforge.api.envelope import ApiError
from toonforge.catalog import Catalog, InputSpec, Manifest
from toonforge.catalog.manifest import InputType
from toonforge.catalog.output_format import output_inputs
from toonforge.catalog.schema import GROUP_TITLE
from toonforge.catalog.search import SORTS as TOOL_SORTS
from toonforge.catalog.search import default_order
from toonforge.catalog.validation import SEED_MAX
from toonforge.tasks import lifecycle as lc
from toonforge.tasks.db import DB_UNAVAILABLE

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
# A file input's value: an upload's id (32 hex digits) or an http(s) URL; empty for none.
FILE_VALUE = r"^\s*([0-9a-f]{32}|[Hh][Tt][Tt][Pp][Ss]?://[^\s/?#]+.*)?\s*$"

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
    tasklist: list[TaskRecord] | None = Field(
        None,
        description="With `Prefer: wait=N` only, when the task ended within N seconds: the "
        "task as Task/Detail gives it.",
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
    url: str = Field(
        description="Where to download the file: `/v1/File/{accesskey}/{name}` on this server "
        "with local storage; with S3 storage a presigned URL of the object (or one under "
        "TOONFORGE_STORAGE_PUBLIC_URL)."
    )
    urlexpiretime: str = Field(
        description='When `url` stops working, unix seconds; "0" when it does not expire.'
    )


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
    name: str = Field(description='Always "".')
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
    guestid: None = Field(description="Always null (no guests on this server).")
    projectid: str
    modelid: str
    modelslugowner: str
    modelslugproject: str
    modeldescription: str
    description: str = Field(description='Always "".')
    basemodelid: str = Field(description='Always "0".')
    runtype: str = Field(description='Always "model".')
    callbackurl: str
    categories: str = Field(description="The tool's categories, as a JSON text.")
    outputs: list[OutputFile]
    size: str = Field(description="Total bytes of the outputs.")
    queueposition: str = Field(
        "0",
        description="toonforge: a queued task's 1-based place among the queued tasks that "
        'run before it (every worker serves every runnable tool, oldest first); "0" when '
        "not queued.",
    )
    estimatedstarttime: str = Field(
        "0",
        description="toonforge: a queued task's estimated start (unix seconds), from the "
        'recent run times of the tools ahead and the live workers; "0" when unknown or '
        "not queued.",
    )
    outputsexpiretime: str = Field(
        description="When the retention period (TOONFORGE_OUTPUT_RETENTION) deletes the "
        'outputs, unix seconds; "0" when never, or when they are already gone.'
    )
    callbacks: list[CallbackDeliveryRecord] = Field(
        default_factory=list,
        description="Task/Detail, Cancel, Kill and InputOutputDelete only: the callback "
        "deliveries (when Run had a callbackUrl).",
    )


class TaskAnswer(Envelope):
    total: str = Field(
        "",
        description='Task/Detail: "1". Task/List: the number of the project\'s tasks that '
        "match (all pages), as a string. Absent from Cancel, Kill and InputOutputDelete.",
    )
    tasklist: list[TaskRecord] = Field(default_factory=list)


class ParameterOption(BaseModel):
    """One option of a `select` input (`value`, `label`, and where the page has them
    `description`, `triggerwords`, `generatesettings`, …)."""

    model_config = ConfigDict(extra="allow")

    value: str = Field(description="The value to send to Run.")
    label: str
    description: str = Field("", description="Absent when the page has none.")
    triggerwords: list[str] = Field(default_factory=list, description="Absent when none.")
    generatesettings: list[Any] = Field(
        default_factory=list,
        description="The page's settings that come with the option (as the page gives them); "
        "absent when none.",
    )


class ParameterItem(BaseModel):
    """One input of the tool, as the tool page lists it plus the bounds Run enforces. A bound
    the input does not have is absent."""

    model_config = ConfigDict(extra="allow")

    id: str = Field(description="The input's name: the key to send to Run.")
    label: str = Field(description="The page's text key of the input's label.")
    help: str = Field(description="The page's text key of the input's help.")
    type: InputType = Field(
        description="As on the page; `fileinput` (or `file`) takes an upload's id or URL, or "
        "an http(s) URL (see File/Upload and Run)."
    )
    default: Any = Field(None, description="The page's default value (any JSON type).")
    options: list[ParameterOption] = Field(
        default_factory=list, description="`select` inputs only."
    )
    min: float = Field(0, description="Smallest value (numbers).")
    max: float = Field(0, description="Largest value (numbers).")
    multiple_of: int = Field(0, description="The value must be a multiple of it.")
    integer: bool = Field(description="The number must be whole.")
    max_length: int = Field(0, description="At most this many characters (text).")
    seed: bool = Field(description="A seed: an integer, or empty for a random one.")
    required: bool
    note: str = Field(
        "",
        description="The bounds in words (`Integer between 64 and 1024. A multiple of 8.`); "
        "absent when the input has none.",
    )
    step: int = Field(
        1, description="1 for whole numbers, the `multiple_of` where there is one; absent else."
    )


class ParameterGroup(BaseModel):
    model_config = ConfigDict(extra="allow")

    title: str = Field(description=f"`{GROUP_TITLE}`.")
    items: list[ParameterItem] = Field(description="Every input, in page order.")


class ToolRecord(BaseModel):
    """A catalog tool. `parameters`, `inspire`, `readme` and `samples` are left out by the
    `summary` flag of Tool/List and Tool/Detail, and by Tool/Explore."""

    model_config = ConfigDict(extra="allow")

    id: str
    title: str
    slugowner: str = Field(description="As on the tool's page.")
    slugproject: str = Field(description="As on the tool's page (`CartoonMix v1.0`).")
    cleanslugowner: str
    cleanslugproject: str = Field(description="Lower case, `-` separated (`cartoonmix-v1-0`).")
    description: str
    seodescription: str = Field(description="The page's description (the same text).")
    cover: str
    image: str = Field(description="The page's cover (the same URL).")
    categories: list[str]
    tags: list[str]
    cps: str = Field(description="Price per second of run time, a decimal string.")
    price: str = Field(description="The same as `cps`.")
    pricetype: str = Field(description="`per-second`.")
    dynamicprice: str = Field(description='`""`: the price does not depend on the inputs.')
    approximatelycost: str = Field(
        description="`cps` × the tool's typical run time on this server (the median of its "
        'last successful runs); `""` until it has run successfully once.'
    )
    computingtime: str = Field(
        description='That typical run time in words (`"20 seconds"`), or `""`.'
    )
    addedtime: str = Field(description="When the tool became runnable here, unix seconds.")
    averagepoint: str = Field(description='`"0.00"`: no ratings on this server.')
    commentcount: str = Field(description='`"0"`: no comments on this server.')
    ratedusercount: str = Field(description='`"0"`: no ratings on this server.')
    engineready: bool = Field(description="false for a tool that cannot run here.")
    enginenote: str = Field(description="Why not, when `engineready` is false.")
    offlinemode: bool = Field(description="The server runs tiny stand-in weights.")
    offlinenote: str = Field("", description="Present in offline mode only.")
    triggerwords: list[str]
    parameters: list[ParameterGroup] = Field(
        default_factory=list,
        description=f'The inputs, grouped: `[{{"title": "{GROUP_TITLE}", "items": [...]}}]`, '
        "one group with every input in page order. Not in summaries.",
    )
    inspire: list[dict[str, Any]] = Field(
        default_factory=list, description="The page's example inputs. Not in summaries."
    )
    readme: str = Field("", description="A short HTML text from the description. Not in summaries.")
    samples: list[dict[str, Any]] = Field(
        default_factory=list, description="`[]`: no sample outputs recorded. Not in summaries."
    )


class ToolListAnswer(Envelope):
    total: int = Field(0, ge=0, description="Number of matching tools (all pages): a number.")
    tool: list[ToolRecord] = Field(default_factory=list)


class ToolDetailAnswer(Envelope):
    tool: list[ToolRecord] = Field(default_factory=list, description="The one tool.")


class ExploreGroup(BaseModel):
    """One kind of task the tools do (an `x-to-y` category, or `other`)."""

    model_config = ConfigDict(extra="allow")

    id: str = Field(description="The category (`text-to-image`), or `other`.")
    title: str = Field(description="`Text to Image`.")
    total: int = Field(ge=0, description="How many tools the group has: a number.")
    tools: list[ToolRecord] = Field(
        description="Summary records in `id` order, at most 20 (`total` counts them all)."
    )


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

    id: str = Field(description="The upload's id: a value for a file input of Run.")
    name: str = Field(
        description="The file's name; characters other than letters, digits, "
        "`.`, `-` and `_` become `_`."
    )
    contenttype: str = Field(description="The part's declared type, or one guessed from the name.")
    size: str = Field(description="Bytes, as a string.")
    url: str = Field(
        description="Where it is served (`/v1/File/{accesskey}/{name}`, no "
        "authentication): also a value for a file input of Run."
    )
    addedtime: str = Field(description="Unix seconds.")
    accesskey: str


class UploadAnswer(Envelope):
    files: list[UploadedFile] = Field(default_factory=list, alias="list")


class Health(BaseModel):
    model_config = ConfigDict(extra="allow")

    result: bool
    offlinemode: bool = False
    version: str = ""


# --------------------------------------------------------------------------------------------
# Request bodies (the catalog's Run bodies are generated from the manifests further down)

# A whole number within bounds, or the same written as a string (empty: the default).
DigitsText = Annotated[str, Field(pattern=r"^([0-9]+)?$")]
ToolCount = Annotated[int, Field(ge=0, le=routes_tool.MAX_LIMIT * 1000)] | DigitsText
TaskStart = Annotated[int, Field(ge=0, le=10**9)] | DigitsText
TaskLimit = Annotated[int, Field(ge=1, le=routes_task_list.MAX_LIMIT)] | DigitsText


def _choice(values: Any, *, upper_too: bool = False) -> dict[str, Any]:
    """The allowed values of a text field (and the empty text: the default)."""
    allowed = [*values, *([v.lower() for v in values] if upper_too else []), ""]
    return {"enum": list(dict.fromkeys(allowed))}


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

    start: ToolCount = Field(0, description="Offset of the first tool.")
    limit: ToolCount = Field(
        20, description=f"Page size (at most {routes_tool.MAX_LIMIT} are returned)."
    )
    search: str = Field(
        "",
        description="Text searched in titles, slugs, tags, categories, trigger words and "
        "descriptions: a tool matches when the whole text or one of its words (one-letter and "
        "filler words dropped) appears.",
    )
    sort: str = Field(
        "id",
        json_schema_extra=_choice(TOOL_SORTS),
        description="`id` (the default), `title`, `slugowner`, `slugproject`: by that field; "
        "`relevance`: how well the tool matches `search`; `time`: when the tool became "
        "runnable here; `ratedusercount`, `commentcount`, `averagepoint`: no ratings here, so "
        "the `id` order. Ties keep the `id` order.",
    )
    order: str = Field(
        "",
        json_schema_extra=_choice(("ASC", "DESC"), upper_too=True),
        description="Default: the sort's own ("
        + ", ".join(f"`{k}` {default_order(k)}" for k in TOOL_SORTS)
        + ").",
    )
    categories: str | list[str] = Field(
        "", description="Categories the tool must all have: a list or a comma-separated text."
    )
    tags: str | list[str] = Field(
        "", description="Tags the tool must all have: a list or a comma-separated text."
    )
    slugowner: str = Field("", description="Only this owner's tools (page or clean form).")
    summary: bool | str = Field(
        False,
        description='true (or "1", "true", "yes"): leave out parameters, inspire, readme and '
        "samples.",
    )
    hideworkflows: Any = Field(
        None, description="Accepted, no effect: there are no workflows on this server."
    )


class ToolDetailBody(BaseModel):
    model_config = ConfigDict(extra="allow")

    slugowner: str = Field(min_length=1, description="As on the page, or the clean slug.")
    slugproject: str = Field(
        min_length=1, description="As on the page (`CartoonMix v1.0`) or clean (`cartoonmix-v1-0`)."
    )
    summary: bool | str = Field(
        False,
        description='true (or "1", "true", "yes"): leave out parameters, inspire, readme and '
        "samples.",
    )


class ToolExploreBody(BaseModel):
    """No field: the body is not read (send none, or `{}`)."""

    model_config = ConfigDict(extra="allow")


class TaskListBody(BaseModel):
    """All optional; numbers may be strings. Another project's tasks are never counted or
    shown."""

    model_config = ConfigDict(extra="allow")

    type: str = Field(
        "model",
        json_schema_extra=_choice(routes_task_list.TYPES),
        description="The kind of task: `model` (the only kind here).",
    )
    sort: str = Field(
        "id",
        json_schema_extra=_choice(tuple(routes_task_list.SORTS)),
        description="Tasks that have not started or ended yet come last when sorting by "
        "`starttime` or `endtime`; ties in id order.",
    )
    order: str = Field("DESC", json_schema_extra=_choice(("ASC", "DESC"), upper_too=True))
    start: TaskStart = Field(0, description="Offset of the first task.")
    limit: TaskLimit = Field(20, description=f"Page size, 1 to {routes_task_list.MAX_LIMIT}.")
    modelName: str = Field(
        "",
        description="Only the tasks of the tools whose `owner/slug` (page or clean form) or "
        "title contains this text, case-insensitive.",
    )
    model: str = Field("", description="The same as `modelName` (used when it is absent).")
    status: str = Field(
        "",
        json_schema_extra=_choice(routes_task_list.STATUSES),
        description="Only the tasks whose last status is this one.",
    )


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
    file: bytes = Field(
        json_schema_extra={"format": "binary"},
        description="The file, at most `TOONFORGE_UPLOAD_MAX_MB` (default 100).",
    )
    folderid: str = Field(
        "", max_length=0, description="Not supported (there are no folders): absent or empty."
    )


# --------------------------------------------------------------------------------------------
# The WebSocket's messages


class SocketTaskInfo(BaseModel):
    """What the client sends: follow one task."""

    type: Literal["task_info"]
    tasktoken: str = Field(description="The task's socketaccesstoken (Run's answer).")
    previews: bool = Field(
        False,
        description="toonforge: true to get preview images in `task_output` frames "
        "(`message.preview`, `message.previewStep`).",
    )


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
    preview: str | None = Field(
        None,
        description="toonforge, with `previews: true` only, every few steps: a "
        "`data:image/webp;base64,...` URL of the first sample as it stands (at most 128 px).",
    )
    previewStep: str | None = Field(None, description="The step `preview` shows.")


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
    queueposition: str | None = Field(
        None,
        description="toonforge, while the task is queued: its 1-based place in the queue "
        "(as in the TASK record).",
    )
    estimatedstarttime: str | None = Field(
        None,
        description='toonforge, while the task is queued: estimated start, unix seconds ("0": '
        "unknown).",
    )


class SocketError(BaseModel):
    """A message the server could not use (not JSON, not task_info), or an unknown token
    (`type` task_info, message "There is no task yet.")."""

    type: str
    result: Literal[False]
    message: str
    tasktoken: str = ""


# --------------------------------------------------------------------------------------------
# Operations


BODY_LIMIT_MIB = request_body.MAX_BODY_BYTES // (1024 * 1024)
TOO_LARGE_BODY = (
    f"The request body is larger than {BODY_LIMIT_MIB} MiB: refused from its Content-Length "
    "before it is read, or as soon as a body without one passes the limit while it streams in."
)


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
    # What the 413 answer means here, and its message.
    too_large: tuple[str, str] = (
        TOO_LARGE_BODY,
        f"Request body is larger than {request_body.MAX_BODY_BYTES} bytes.",
    )
    # The route checks the Content-Length header (one that is not a number: 400).
    length_checked: bool = True


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
        "The task with its status, parameters, times, cost, outputs and callback deliveries. "
        "A read: it stores nothing (not even its nonce)." + TASK_REF_NOTE,
        TaskAnswer,
        TaskRefBody,
    ),
    Operation(
        "/v1/Task/Cancel",
        "post",
        "Task",
        "Cancel a queued task",
        "Removes a task no worker has taken yet; it ends in `task_cancel`. A task that has "
        "ended: code 1 `Task is not in a cancellable state.`. A task a worker has taken (it "
        "is running): two errors, code 1 `Task is not in a cancellable state.` and code 0 "
        "`Task/Cancel removes a task that is still queued; use Task/Kill to stop a task a "
        "worker has taken.`." + TASK_REF_NOTE,
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
        "Deletes the output files of a terminal task, and the uploads it used as inputs, and "
        "keeps its record (`outputs` becomes empty); idempotent. A task that has not ended: "
        "code 0 `Task must be completed or cancelled before deleting files`. Errors (HTTP "
        "200, `result` false): code 0 `tasktoken is required`; code 1 `There is no task "
        "yet.` (unknown, or another project's task).",
        TaskAnswer,
        TaskRefBody,
    ),
    Operation(
        "/v1/Task/List",
        "post",
        "Task",
        "The project's tasks",
        "A page of the calling project's tasks, newest first by default, with `total` the "
        "number that match (a string). A read: it stores nothing. Errors name the field: "
        "`Request parameter [sort] must be one of: id, createtime, starttime, endtime`, "
        "`Request parameter [limit] must be between 1 and 100`, `… [status] …`.",
        TaskAnswer,
        TaskListBody,
    ),
    Operation(
        "/v1/Tool/List",
        "post",
        "Tool",
        "The catalog",
        "Tools matching the filters, sorted, one page; `total` (a number) counts every match. "
        "No authentication (the catalog is public). Errors: `Request parameter [sort] must "
        "be one of: …`, `… [order] must be one of: ASC, DESC`, `… [start] must be integer "
        "or float`, `… [limit] must be between 0 and 1000000`.",
        ToolListAnswer,
        ToolListBody,
        signed=False,
    ),
    Operation(
        "/v1/Tool/Detail",
        "post",
        "Tool",
        "One tool with its inputs",
        'The tool with `parameters` (its inputs grouped: `[{"title": "Input", '
        '"items": [{"id", "type", "label", "required", "note", …}]}]`, '
        "the same inputs as the Run body below), `inspire` (example inputs), `readme` and "
        "`samples`; no authentication. Unknown tool: code 1 `slug-owner-project-not-exist`.",
        ToolDetailAnswer,
        ToolDetailBody,
        signed=False,
    ),
    Operation(
        "/v1/Tool/Explore",
        "post",
        "Tool",
        "The catalog in groups",
        "The catalog grouped for browsing: one group per kind of task the tools do (their "
        "`x-to-y` categories, in catalog order; tools without one go to `other`), with "
        "summary records in `id` order, at most 20 per group (`total`, a number, counts them "
        "all). No authentication; the body is not read.",
        ExploreAnswer,
        ToolExploreBody,
        signed=False,
        length_checked=False,
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
        too_large=(
            "The file is larger than `TOONFORGE_PRIVATE_MODEL_MAX_GB` (default 8): refused "
            "from the Content-Length before the body is read, or while it streams in.",
            "Request parameter [file] is larger than 8 GB, the limit for private models "
            "(TOONFORGE_PRIVATE_MODEL_MAX_GB)",
        ),
    ),
    Operation(
        "/v1/PrivateModel/List",
        "post",
        "PrivateModel",
        "The project's private models",
        "Only the calling project's models, with `total` (a string). A read: it stores "
        "nothing; the body is not read.",
        PrivateModelAnswer,
        EmptyBody,
        length_checked=False,
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
        "Stores a file (the multipart part `file`) for the calling project and answers it in "
        "`list`: its `id` and `url` are values for a file input of Run (`{id}` or `{id}Url`). "
        "The file is served at its `url` with no authentication (the access key is the "
        "capability). Errors (HTTP 200): `Request parameter [file] required (send "
        "multipart/form-data)`, `… [file] is empty`, `… [folderid] is not supported: this "
        "server has no folders`. Multipart only.",
        UploadAnswer,
        FileUploadForm,
        media=(MULTIPART,),
        too_large=(
            "The file is larger than `TOONFORGE_UPLOAD_MAX_MB` (default 100): refused from "
            "the Content-Length before the body is read, or as soon as a body without one "
            "passes the limit while it streams in.",
            "Request parameter [file] is larger than 100 MB, the limit for uploads "
            "(TOONFORGE_UPLOAD_MAX_MB)",
        ),
        length_checked=False,
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
    elif spec.is_file:
        # Required or not, it may be empty here when `{name}Url` carries it (see
        # run_body_schema).
        schema = {"type": "string", "pattern": FILE_VALUE}
    else:  # text, textarea
        schema = {"type": "string"}
        if spec.max_length is not None:
            schema["maxLength"] = spec.max_length
        if spec.required:
            schema["pattern"] = r"\S"
    notes = [f"Page label `{spec.label}` ({spec.type})."]
    if spec.is_file:
        notes.append(
            "The `id` or `url` of a file this project sent to File/Upload (it becomes the "
            "file's URL in the task's parameters), or any other http(s) URL; it may be sent "
            f"as `{spec.name}Url` instead. Another project's upload is not found. Files inside "
            "the Run body are not read: upload them first."
        )
    elif spec.seed:
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
    props: dict[str, Any] = {}
    choices: list[dict[str, Any]] = []
    for spec in manifest.inputs:
        props[spec.name] = input_schema(spec)
        if not spec.is_file:
            continue
        url_field = f"{spec.name}Url"
        props[url_field] = {
            "type": "string",
            "pattern": FILE_VALUE,
            "description": f"The same as `{spec.name}` (multipart clients send both, one "
            f"empty). Two different non-empty values in `{spec.name}` and `{url_field}` are "
            "refused.",
        }
        if spec.required:
            given = {"type": "string", "pattern": r"\S"}
            choices.append(
                {
                    "anyOf": [
                        {"required": [spec.name], "properties": {spec.name: given}},
                        {"required": [url_field], "properties": {url_field: given}},
                    ]
                }
            )
    for spec in output_inputs(manifest):
        props[spec.name] = input_schema(spec)
        props[spec.name]["description"] = (
            "toonforge addition (not on the tool page): " + props[spec.name]["description"]
        )
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
    required = [s.name for s in manifest.inputs if s.required and not s.is_file]
    if required:
        schema["required"] = required
    if choices:  # a required file input: in `{name}` or in `{name}Url`
        schema["allOf"] = choices
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


RESPONSE_503: dict[str, Any] = {
    **_envelope_response(
        "The database cannot answer now (unreachable, or busy past its wait: SQLite's write "
        "lock, no free pooled connection). Retry after the seconds `Retry-After` gives.",
        DB_UNAVAILABLE,
    ),
    "headers": {
        "Retry-After": {
            "description": "Seconds to wait before retrying.",
            "schema": {"type": "string", "pattern": DIGITS},
        }
    },
}
RESPONSES_COMMON: dict[str, Any] = {
    "404": _envelope_response(
        "Unknown endpoint or method (`Error parsing url.`).", "Error parsing url."
    ),
    "413": _envelope_response(TOO_LARGE_BODY, "Request body is larger than 8388608 bytes."),
    "503": RESPONSE_503,
}
RESPONSE_400 = _envelope_response(
    "A `Content-Length` header that is not a number of bytes.",
    "Content-Length must be a number of bytes.",
)
RESPONSE_401 = _envelope_response(
    "Authentication failed, decided from the headers before any of the body is read (so "
    "whatever the body): unknown or missing key (`Project authorization is not founded.`), "
    "signature mode without `x-nonce` and `x-signature` (`Project requires signature "
    "authentication. …`), a wrong signature (`Project authorization is not valid.`), a "
    "nonce too far from the current time when the server requires unix-time nonces, a "
    "caller IP outside the project's allow-list (`Requested ip … is not allowed.`), or an "
    "exact repeat of a state-changing request (`Project authorization is not valid: this "
    "request was already made with this nonce.`).",
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
    if op.length_checked:
        responses["400"] = RESPONSE_400
    if op.signed:
        responses["401"] = RESPONSE_401
    responses.update(RESPONSES_COMMON)
    responses["413"] = _envelope_response(*op.too_large)
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
        files = [f"`{i.name}`" for i in m.inputs if i.is_file]
        file_note = (
            f" File inputs ({', '.join(files)}): the `id` or `url` of a file this project "
            "sent to File/Upload, or any other http(s) URL, in `{id}` or `{id}Url`; another "
            "project's upload is `Request parameter [ID] file '…' not found in this project`."
            if files
            else ""
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
            "tasks: code 96. In signature mode an exact repeat (the same nonce and body) is "
            "401. With the header `Prefer: wait=N` (N seconds, at most 60; `wait` alone is 60) "
            "the answer waits for the task: when it ends in time, the answer also holds "
            "`tasklist: [TASK]` as Task/Detail gives it, and `Preference-Applied` says the wait."
            f"{file_note}{readiness}",
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
                "400": RESPONSE_400,
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
        "description": "The file's URL on this server (uploads' `url`; outputs' `url` with "
        "local storage). With S3 storage the answer is instead a 302 redirect (`Location`: a "
        "fresh presigned, or public, URL of the object).",
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
   - toonforge: while the task is queued, frames also carry `queueposition` and
     `estimatedstarttime`, and a `task_queue` frame is sent again when the position changes
     (always before `task_accept`).
   - toonforge: with `"previews": true` in `task_info`, some `task_output` messages also
     carry `preview` (a small `data:image/webp;base64,...` image) and `previewStep`.
3. An unknown token: `{{"type": "task_info", "tasktoken": TOKEN, "result": false,
   "message": "There is no task yet."}}`. A message that is not JSON or not `task_info`:
   `{{"type": "error", "result": false, "message": …}}`. The socket stays open for another
   `task_info`.

The extension `x-websocket` of this document gives the same in machine-readable form (its
message schemas are in `components.schemas`: `SocketTaskInfo`, `SocketEvent`,
`SocketProgress`, `SocketError`).
"""

STATE_CHANGING = (
    "Run, Task/Cancel, Task/Kill, Task/InputOutputDelete, File/Upload, PrivateModel/Add and "
    "PrivateModel/Delete"
)
REPLAY_RULE = (
    '**Replays** (signature mode). The nonce is not "accepted once": clients make it from '
    "the clock, so parallel calls may share one. Reads (Task/Detail, Task/List, "
    "PrivateModel/List) store no nonce and may repeat one freely. A state-changing call ("
    + STATE_CHANGING
    + ") refuses an exact repeat: the same nonce, method, path and body (for File/Upload, "
    "the same multipart boundary and file size) within `TOONFORGE_NONCE_WINDOW_SECONDS` "
    "(default 600) answers 401 `Project authorization is not valid: this request was already "
    "made with this nonce.`. A new nonce (and its signature) per state-changing request is "
    "always safe. With `TOONFORGE_NONCE_MAX_SKEW_SECONDS` set, every signed call must also "
    "carry a unix-time nonce (seconds or milliseconds) that close to the server's clock."
)

DESCRIPTION = f"""
toonforge speaks the Wiro task API: an existing client changes only its base URL.
Every endpoint is `POST` under `/v1` (the output files and `/healthz` are `GET`).

## Requests

JSON (`application/json`) is the primary content type. Bodies may also be
`multipart/form-data` or `application/x-www-form-urlencoded`; a body that is JSON is read as
JSON whatever its `Content-Type` says. Numbers may be written as strings (`"scale": "4"`).
A body is at most {BODY_LIMIT_MIB} MiB (the uploads have their own limits): a larger one is
refused (413) from its `Content-Length`, or as soon as it passes the limit while it streams in.

`Run` has one path per catalog tool, `/v1/Run/OWNER/SLUG`, each with that tool's inputs
(types, bounds, options, defaults). The tool page's own slug (`CartoonMix%20v1.0`) works as
well as the clean one listed here. A file input takes the `id` or `url` of a file sent to
`File/Upload` (or an http(s) URL), in `{{id}}` or `{{id}}Url`.

## Authentication

A project has an API key and an API secret, and one mode fixed when it is created:

- **signature**: `x-api-key`, `x-nonce` and `x-signature`, where
  `x-signature = hex(HMAC_SHA256(key=API_KEY, message=API_SECRET + NONCE))`. The nonce is a
  unix time (seconds or milliseconds) or any integer; make a new one, and its signature, for
  each state-changing request.
- **key only**: `x-api-key` alone.

{REPLAY_RULE}

Authentication is decided from the headers alone, before any of the body is read: a request
that fails it answers HTTP 401 whatever its body (and its size). `Tool/List`, `Tool/Detail`,
`Tool/Explore`, the files at `/v1/File/…` (the access key is the capability) and `/healthz`
need no authentication.

## Answers

Every JSON answer is the envelope `{{"result": bool, "errors": [{{"code", "message"}}], …}}`;
numbers inside task, file and model records are strings (Tool/List's and Tool/Explore's
`total` are numbers). HTTP 200 for successes and for errors about the request's content
(validation, not found, not cancellable: `result` false), 400 for a `Content-Length` that is
not a number, 401 for authentication, 404 (`Error parsing url.`) for an unknown endpoint, 413
for a body that is too large, 503 with `Retry-After` when the database cannot answer now.
Error codes: 0 general/validation, 1 not found, 96 concurrency limit reached, 97 quota, 98
sign-in required, 99 bearer token invalid. The server never answers 422.
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
    ToolListAnswer,
    ToolDetailAnswer,
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
                    "description": "Signature mode: an integer (e.g. the unix time), signed "
                    "with `x-signature`. " + REPLAY_RULE,
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
