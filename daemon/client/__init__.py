"""edgetpud's client library: what camera apps import.

    from edgetpud.daemon.client import Client
    with Client() as tpu:                      # unix:/run/edgetpud/edgetpud.sock
        best = tpu.classify("mobilenet", "cat.jpg").classes[0]

Every call returns plain dataclasses (``types.py``) and raises
:class:`ClientError` carrying the gRPC status code and the daemon's message.
"""
from __future__ import annotations

import dataclasses
import functools
import itertools
import math
import os
import re
import threading
import time
import weakref
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, TypeVar, Union

import grpc
import numpy as np

from edgetpud.protos.edgetpud.v1 import edgetpud_pb2 as pb
from edgetpud.protos.edgetpud.v1 import edgetpud_pb2_grpc as pb_grpc

from . import _convert as convert
from . import _registry_wire as registry_wire
from ._convert import Crop, ImageLike
from .shared import InFlight, SharedFrames, release as _release
from .types import (AddedSamples, Class, ClassifyResult, ClientError, DetectedObject, DetectResult, Device,
                    DeviceUsage, EmbedResult, ExportResult, Frame, HeadVersion, ImageTooLargeError, InvokeResult,
                    LearnedClass,
                    LearnedModel, Model, RequestSummary, Result, SharedFrame, Status, StreamResult, TensorInfo,
                    Timing, TrainProgress)

__all__ = [
    "Client", "ClientError", "ImageTooLargeError", "Frame", "Class", "DetectedObject", "Timing", "Result", "ClassifyResult",
    "DetectResult", "EmbedResult", "InvokeResult", "StreamResult", "Device", "Model", "TensorInfo", "Status",
    "LearnedClass", "LearnedModel", "AddedSamples", "TrainProgress", "TrainRun", "HeadVersion", "ExportResult",
    "RequestSummary", "DeviceUsage", "SharedFrame", "SharedFrames",
    "DEFAULT_ADDRESS", "default_address", "normalize_address",
]

DEFAULT_ADDRESS = "unix:/run/edgetpud/edgetpud.sock"
ADDRESS_ENV = "EDGETPUD_ADDRESS"
#: Large enough for a 4K RGBA frame.
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
UPLOAD_CHUNK_BYTES = 1024 * 1024
_STATUS = {pb.FRAME_STATUS_OK: "ok", pb.FRAME_STATUS_DROPPED: "dropped", pb.FRAME_STATUS_FAILED: "failed"}
#: How gRPC words an UNAVAILABLE that comes from the connection, not from the daemon: none reached it...
_UNREACHABLE = ("failed to connect", "errors resolving", "Connection refused", "No such file or directory")
#: ... or the connection broke while the call was running.
_LOST = ("Socket closed", "Connection reset", "Stream removed", "Broken pipe", "GOAWAY", "Transport closed")

T = TypeVar("T")


def default_address() -> str:
    """$EDGETPUD_ADDRESS, or the system daemon's socket."""
    return os.environ.get(ADDRESS_ENV) or DEFAULT_ADDRESS


def normalize_address(address: str) -> str:
    """A gRPC target: a bare filesystem path becomes ``unix:PATH``."""
    if address.startswith(("/", "./", "../")):
        return f"unix:{os.path.abspath(address)}"
    return address


def _wrap_errors(method: Callable[..., T]) -> Callable[..., T]:
    """Turn grpc.RpcError into ClientError with the code and the daemon's message."""
    @functools.wraps(method)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        try:
            return method(*args, **kwargs)
        except grpc.RpcError as exc:
            raise _client_error(exc, getattr(args[0], "address", None) if args else None) from None
    return wrapper


def _mock_only(method: Callable[..., T]) -> Callable[..., T]:
    """A daemon on real devices does not serve MockControl: say so instead of "Method not found"."""
    @functools.wraps(method)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        try:
            return method(*args, **kwargs)
        except ClientError as exc:
            if exc.code != grpc.StatusCode.UNIMPLEMENTED:
                raise
            raise ClientError(exc.code, "this daemon does not serve fault injection: "
                              "it runs on real devices; start it with --device mock") from None
    return wrapper


#: How gRPC words a message over a size limit: "SERVER: Received message larger than max (22500093 vs. 16777216)"
#: (the daemon's max_message_bytes) or "CLIENT: Sent message larger than max (...)" (this library's).
_TOO_LARGE = re.compile(r"(SERVER|CLIENT): \w+ message larger than max \((\d+) vs\. (\d+)\)")


class _ReleasingResults:
    """A stream's results, each freeing its frame's shared slot before it is handed on.

    A class rather than a generator, so that ``close()`` cancels the call and frees every slot
    still held even when the results were never read (a generator that never started runs
    no ``finally``).
    """

    def __init__(self, results: Iterator[StreamResult], in_flight: InFlight) -> None:
        self._results, self._in_flight = results, in_flight

    def __iter__(self) -> "_ReleasingResults":
        return self

    def __next__(self) -> StreamResult:
        try:
            result = next(self._results)
        except BaseException:
            self.close()  # the stream ended (or failed): no frame is read any more
            raise
        self._in_flight.answered()
        return result

    def close(self) -> None:
        """Cancel the call (when not done) and free the slots of the frames not answered."""
        close = getattr(self._results, "close", None)
        try:
            if close is not None:
                close()
        finally:
            self._in_flight.close()

    def __del__(self) -> None:
        self._in_flight.close()


def _image_too_large(exc: grpc.RpcError, image: ImageLike, size: int) -> Optional[ImageTooLargeError]:
    """The error for an image request over a message size limit, naming the image and the ways out, or None."""
    code = exc.code() if hasattr(exc, "code") else None
    found = _TOO_LARGE.search((exc.details() if hasattr(exc, "details") else "") or "")
    if code != grpc.StatusCode.RESOURCE_EXHAUSTED or found is None:
        return None
    limit = int(found.group(3))
    if isinstance(image, (str, Path)):
        what = f"image {image} ({_megabytes(Path(image).stat().st_size)})"
    elif isinstance(image, (bytes, bytearray, memoryview)):
        what = f"the image ({_megabytes(len(image))})"
    else:
        what = "the frame"
    if found.group(1) == "SERVER":
        where = f"the daemon's limit of {limit} bytes (max_message_bytes in edgetpud.toml)"
        raise_it = "or raise max_message_bytes in the daemon's edgetpud.toml and restart it"
    else:
        where = f"this client library's limit of {limit} bytes (MAX_MESSAGE_BYTES)"
        raise_it = "the limit protects both ends from a runaway request"
    return ImageTooLargeError(grpc.StatusCode.RESOURCE_EXHAUSTED, (
        f"{what} makes a request of {size} bytes, over {where}: send a smaller image (a JPEG or PNG of it, "
        f"or a scaled-down copy: the model sees it at its input size anyway), or a raw frame at the model's "
        f"input size; {raise_it}"))


def _megabytes(size: int) -> str:
    return f"{size / 1e6:.1f} MB"


def _client_error(exc: grpc.RpcError, address: Optional[str] = None) -> ClientError:
    """The ClientError for ``exc``; a broken or missing connection says so in words, naming the address.

    gRPC's own wording ("Stream removed (Socket closed)") does not tell a user that the daemon
    went away mid-call, nor that the request may have run; the daemon's messages pass unchanged.
    """
    code = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
    details = (exc.details() if hasattr(exc, "details") else str(exc)) or "no message"
    if code == grpc.StatusCode.UNAVAILABLE and address:
        if any(text in details for text in _UNREACHABLE):
            details = (f"cannot reach edgetpud at {address}: is it running? (give its address, "
                       f"or set ${ADDRESS_ENV}) [{details}]")
        elif any(text in details for text in _LOST):
            details = (f"lost the connection to edgetpud at {address} during the call: the daemon stopped or "
                       f"restarted, so the request may or may not have run; retry once it is back [{details}]")
    return ClientError(code or grpc.StatusCode.UNKNOWN, details)


class MockControl:
    """Fault injection into a daemon running with ``--device mock``; each call returns the devices."""

    def __init__(self, stub: pb_grpc.MockControlStub, timeout: Optional[float], address: str = "") -> None:
        self._stub = stub
        self._timeout = timeout
        self.address = address  # named in a connection error

    @_mock_only
    @_wrap_errors
    def inject_fault(self, device: str, fault: str, count: int = 1, seconds: float = 0.0, message: str = "",
                     after_s: float = 0.0) -> List[Device]:
        """Queue ``count`` faults (abort, hang, error, timeout) for the device's next invocations."""
        request = pb.InjectFaultRequest(device=device, fault=fault, count=count, seconds=seconds,
                                        message=message, after_s=after_s)
        return [convert.device(d) for d in self._stub.InjectFault(request, timeout=self._timeout).devices]

    @_mock_only
    @_wrap_errors
    def clear_faults(self, device: str) -> List[Device]:
        reply = self._stub.ClearFaults(pb.MockDeviceRequest(device=device), timeout=self._timeout)
        return [convert.device(d) for d in reply.devices]

    @_mock_only
    @_wrap_errors
    def unplug(self, device: str) -> List[Device]:
        reply = self._stub.Unplug(pb.MockDeviceRequest(device=device), timeout=self._timeout)
        return [convert.device(d) for d in reply.devices]

    @_mock_only
    @_wrap_errors
    def replug(self, device: str) -> List[Device]:
        reply = self._stub.Replug(pb.MockDeviceRequest(device=device), timeout=self._timeout)
        return [convert.device(d) for d in reply.devices]

    @_mock_only
    @_wrap_errors
    def set_temperature(self, device: str, celsius: float) -> List[Device]:
        reply = self._stub.SetTemperature(pb.SetTemperatureRequest(device=device, celsius=celsius),
                                          timeout=self._timeout)
        return [convert.device(d) for d in reply.devices]

    @_mock_only
    @_wrap_errors
    def set_latency(self, device: str, latency_s: Optional[float]) -> List[Device]:
        """Fixed invoke time in seconds; None returns to the daemon's configured mock latency."""
        request = pb.SetLatencyRequest(device=device)
        if latency_s is not None:
            request.latency_s = latency_s
        reply = self._stub.SetLatency(request, timeout=self._timeout)
        return [convert.device(d) for d in reply.devices]


class Client:
    """A connection to one edgetpud daemon. Thread-safe; close it (or use ``with``) when done.

    ``timeout`` is the default per-call deadline in seconds (None: no deadline).
    TCP with TLS: pass ``tls_ca`` (PEM bytes or path), and ``tls_cert``/``tls_key`` when the
    daemon checks client certificates.
    """

    def __init__(self, address: Optional[str] = None, timeout: Optional[float] = 30.0,
                 tls_ca: Union[bytes, str, Path, None] = None, tls_cert: Union[bytes, str, Path, None] = None,
                 tls_key: Union[bytes, str, Path, None] = None) -> None:
        self.address = normalize_address(address or default_address())
        self.timeout = timeout
        options = [("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
                   ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES)]
        if tls_ca is not None or tls_cert is not None:
            credentials = grpc.ssl_channel_credentials(_pem(tls_ca), _pem(tls_key), _pem(tls_cert))
            self._channel = grpc.secure_channel(self.address, credentials, options=options)
        else:
            self._channel = grpc.insecure_channel(self.address, options=options)
        self._inference = pb_grpc.InferenceStub(self._channel)
        # Image calls send bytes built by convert.encode_image_request (one copy of the pixels).
        self._image_calls = {
            name: self._channel.unary_unary(f"/edgetpud.v1.Inference/{name}", request_serializer=None,
                                            response_deserializer=response.FromString)
            for name, response in (("Classify", pb.ClassifyResponse), ("Detect", pb.DetectResponse),
                                   ("Embed", pb.EmbedResponse))
        }
        self._models = pb_grpc.ModelsStub(self._channel)
        self._devices = pb_grpc.DevicesStub(self._channel)
        self._daemon = pb_grpc.DaemonStub(self._channel)
        self._learning = pb_grpc.LearningStub(self._channel)
        # the daemon's shared-memory registry, through its KServe methods (see _registry_wire)
        self._register_region = self._channel.unary_unary(registry_wire.REGISTER)
        self._unregister_region = self._channel.unary_unary(registry_wire.UNREGISTER)
        self._rings: "weakref.WeakSet[SharedFrames]" = weakref.WeakSet()  # closed with the client
        self.mock = MockControl(pb_grpc.MockControlStub(self._channel), timeout, self.address)

    def close(self) -> None:
        """Close the shared-frame rings made here (unregistered and removed), then the channel."""
        for ring in list(self._rings):
            try:
                ring.close()
            except Exception:  # noqa: BLE001 - the daemon may be gone; the object is removed all the same
                pass
        self._channel.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _timeout(self, timeout: Optional[float]) -> Optional[float]:
        return self.timeout if timeout is None else timeout

    # ------------------------------------------------------------ inference

    def _send_image(self, call: str, request: Any, image: ImageLike, crop: Optional[Crop],
                    timeout: Optional[float]) -> Any:
        """One Classify, Detect or Embed; a request over a size limit is named by its image.

        Raises:
            ImageTooLargeError: the request is larger than the daemon's (or this library's) limit.
            grpc.RpcError: any other failure (the caller's ``_wrap_errors`` words it).
        """
        try:
            data = convert.encode_image_request(request, image, crop)
            try:
                return self._image_calls[call](data, timeout=self._timeout(timeout))
            except grpc.RpcError as exc:
                too_large = _image_too_large(exc, image, len(data))
                if too_large is None:
                    raise
                raise too_large from None
        finally:
            _release(image)  # answered (or failed): its shared slot may be written again

    @_wrap_errors
    def classify(self, model: str, image: ImageLike, top_k: int = 0, threshold: float = 0.0,
                 crop: Optional[Crop] = None, version: str = "", timeout: Optional[float] = None) -> ClassifyResult:
        """Top classes of ``image`` (encoded bytes, a path, a Frame or an HxWxC uint8 RGB array).

        Raises:
            ClientError: INVALID_ARGUMENT (bad image), NOT_FOUND (model), UNAVAILABLE, ...
        """
        request = pb.ClassifyRequest(model=model, version=version, top_k=top_k, threshold=threshold)
        return convert.classify_result(self._send_image("Classify", request, image, crop, timeout))

    @_wrap_errors
    def detect(self, model: str, image: ImageLike, top_k: int = 0, threshold: float = 0.0,
               crop: Optional[Crop] = None, version: str = "", timeout: Optional[float] = None) -> DetectResult:
        """Objects in ``image``. Raises: ClientError."""
        request = pb.DetectRequest(model=model, version=version, top_k=top_k, threshold=threshold)
        return convert.detect_result(self._send_image("Detect", request, image, crop, timeout))

    @_wrap_errors
    def embed(self, model: str, image: ImageLike, normalize: bool = False, crop: Optional[Crop] = None,
              version: str = "", timeout: Optional[float] = None) -> EmbedResult:
        """The embedding vector of ``image``. Raises: ClientError."""
        request = pb.EmbedRequest(model=model, version=version, normalize=normalize)
        return convert.embed_result(self._send_image("Embed", request, image, crop, timeout))

    @_wrap_errors
    def invoke(self, model: str, inputs: Union[Dict[str, np.ndarray], Sequence[np.ndarray], None] = None,
               image: Optional[ImageLike] = None, version: str = "",
               timeout: Optional[float] = None) -> InvokeResult:
        """Raw output tensors for raw ``inputs`` (by name or in order), or for an image.

        Raises:
            ClientError: INVALID_ARGUMENT when a tensor's shape or dtype does not fit, ...
        """
        try:
            request = pb.InvokeRequest(model=model, version=version, inputs=convert.tensors(inputs or []))
            if image is not None:
                convert.fill_image(request.image, image)
            return convert.invoke_result(self._inference.Invoke(request, timeout=self._timeout(timeout)))
        finally:
            _release(image)  # answered (or failed): its shared slot may be written again

    def stream(self, model: str, frames: Iterable[Union[ImageLike, Tuple[int, ImageLike]]], task: str = "classify",
               latest_frame_wins: bool = False, max_in_flight: int = 0, top_k: int = 0, threshold: float = 0.0,
               normalize: bool = False, frame_timeout_s: float = 0.0, version: str = "",
               timeout: Optional[float] = None) -> Iterator[StreamResult]:
        """Serve a sequence of frames; yields one StreamResult per frame, in frame order.

        ``frames`` yields images, or ``(frame_id, image)`` pairs to choose the ids (else 1, 2, ...),
        or ``(frame_id, image, reset_state)`` to start a recurrent model's state afresh at that frame
        (a stream carries it from frame to frame).
        With ``latest_frame_wins`` a frame still waiting when a newer one arrives is answered
        ``status="dropped"``. Closing the returned iterator cancels the frames still queued.
        ``timeout`` bounds the whole stream (default: none).

        ``frames`` is read in gRPC's sending thread. When iterating it, or encoding one of its
        frames, raises (a camera gone, a missing path, a bad array), the client stops sending;
        the daemon answers the frames it already has, their results are yielded, and then that
        same exception is raised here, as :meth:`classify` would raise it for the same input.

        Raises:
            ClientError: the stream itself failed (bad config, unknown model, daemon gone).
                A single frame's failure is a StreamResult with status "failed" instead.
            Exception: whatever ``frames`` or encoding one of its frames raised, after the
                results of the frames sent before it (if the daemon fails too, its ClientError
                is raised instead, with that exception as its ``__cause__``).
        """
        if task not in convert.TASKS:
            raise ValueError(f"unknown task {task!r}; use one of {sorted(convert.TASKS)}")
        config = pb.StreamConfig(model=model, version=version, task=convert.TASKS[task], top_k=top_k,
                                 threshold=threshold, normalize=normalize, max_in_flight=max_in_flight,
                                 frame_timeout_s=frame_timeout_s,
                                 frame_policy=pb.FRAME_POLICY_LATEST_WINS if latest_frame_wins
                                 else pb.FRAME_POLICY_KEEP_ALL)

        # What stopped ``frames``: gRPC would log it, cancel the call and lose it as UNKNOWN.
        failure: List[Exception] = []
        in_flight = InFlight()  # the frames sent and not yet answered: what frees their shared slots

        def requests() -> Iterator[pb.StreamRequest]:
            yield pb.StreamRequest(config=config)
            try:
                for item in frames:
                    reset = False
                    if isinstance(item, tuple) and len(item) == 3:
                        frame_id, value, reset = item
                    else:
                        frame_id, value = item if isinstance(item, tuple) else (0, item)
                    message = pb.StreamRequest()
                    message.frame.frame_id = frame_id
                    message.frame.reset_state = bool(reset)
                    try:
                        if task == "raw" and not isinstance(value, (bytes, str, Path, Frame, SharedFrame)):
                            message.frame.inputs.extend(convert.tensors(value))
                        else:
                            convert.fill_image(message.frame.image, value)
                    except BaseException:
                        _release(value)  # never sent: its slot is free again
                        raise
                    if not in_flight.sent(value):
                        return  # the caller closed the stream meanwhile
                    yield message
            except Exception as exc:  # noqa: BLE001 - the caller's own error, raised to the caller below
                failure.append(exc)
            # returning half-closes the stream: the daemon still answers the frames it has

        results = self._stream_results(task, self._inference.Stream(requests(), timeout=timeout), failure,
                                       self.address)
        return _ReleasingResults(results, in_flight)

    @staticmethod
    def _stream_results(task: str, call: Any, failure: List[Exception],
                        address: Optional[str] = None) -> Iterator[StreamResult]:
        """The answers, then ``failure[0]`` if ``frames`` raised and the daemon ended the stream cleanly."""
        try:
            try:
                for msg in call:
                    status = _STATUS.get(msg.status, "failed")
                    if status == "ok":
                        yield StreamResult(msg.frame_id, status, result=convert.stream_payload(task, msg))
                    elif status == "dropped":
                        yield StreamResult(msg.frame_id, status)
                    else:
                        error = ClientError(_code(msg.error.code), msg.error.message)
                        yield StreamResult(msg.frame_id, status, error=error)
            except grpc.RpcError as exc:
                # the daemon's own failure stays a ClientError; the caller's, if any, is its cause
                raise _client_error(exc, address) from (failure[0] if failure else None)
            if failure:
                # raised outside the except clause, so its context and traceback stay the caller's
                raise failure[0]
        finally:
            call.cancel()

    # ------------------------------------------------------------ shared memory

    @_wrap_errors
    def register_shared_memory(self, name: str, key: str, byte_size: int, offset: int = 0,
                               timeout: Optional[float] = None) -> None:
        """Register ``byte_size`` bytes at ``offset`` of the POSIX shm object ``key`` as region ``name``
        (the registry KServe's SystemSharedMemoryRegister fills; this user must be able to open it).

        Raises:
            ClientError: ALREADY_EXISTS, NOT_FOUND (no such object), INVALID_ARGUMENT, PERMISSION_DENIED, ...
            ValueError: a negative offset or size.
        """
        self._register_region(registry_wire.register_request(name, key, offset, byte_size),
                              timeout=self._timeout(timeout))

    @_wrap_errors
    def unregister_shared_memory(self, name: str = "", timeout: Optional[float] = None) -> None:
        """Forget region ``name`` (every region when empty). Raises: ClientError."""
        self._unregister_region(registry_wire.unregister_request(name), timeout=self._timeout(timeout))

    def shared_frames(self, width: int, height: int, pixel_format: str = "RGB", slots: int = 4) -> SharedFrames:
        """A ring of ``slots`` frames in shared memory, registered with the daemon (it must run on this host).

        ``put(array)`` or ``acquire()`` gives a SharedFrame that ``classify``, ``detect``, ``embed`` and
        ``stream`` take like any image; its slot is written again only after its answer came. Close the
        ring (or use ``with``) to unregister and remove it.

        Raises:
            ClientError: the daemon refused the region. OSError: /dev/shm cannot hold it.
        """
        ring = SharedFrames(lambda name, key, size: self.register_shared_memory(name, key, size),
                            lambda name, timeout=None: self.unregister_shared_memory(name, timeout=timeout),
                            width, height, pixel_format, slots)
        self._rings.add(ring)
        return ring

    # ------------------------------------------------------------ learning

    def add_samples(self, model: str, label: str, images: Iterable[ImageLike] = (),
                    embeddings: Iterable[Any] = (), keep_classes: bool = False,
                    timeout: Optional[float] = None) -> AddedSamples:
        """Teach ``model`` the class ``label`` by imprinting from images (as :meth:`classify` takes them)
        and/or embeddings (array-likes of the model's embedding size), read lazily as they are sent.

        The class is servable, and every sample stored, when this returns. When reading an image
        fails part way the call is cancelled, so the daemon stores none of them, and that error is
        raised. ``keep_classes`` keeps a classifier's pretrained classes beside the new one (on the
        call that first gives the model a head).

        Raises:
            ClientError: NOT_FOUND (model), INVALID_ARGUMENT (label, image, embedding size or values,
                a full class), FAILED_PRECONDITION (no usable embedding), ...
            OSError, ValueError: an image or embedding that cannot be read or sent.
        """
        samples = itertools.chain(((label, image, None) for image in images),
                                  ((label, None, vector) for vector in embeddings))
        return self._add_samples(model, label, samples, keep_classes, timeout)

    def add_labeled_images(self, model: str, samples: Iterable[Tuple[str, ImageLike]], keep_classes: bool = False,
                           timeout: Optional[float] = None) -> AddedSamples:
        """Add ``(label, image)`` pairs of several classes in one call, so the daemon stores all or none.

        Raises:
            ValueError: ``samples`` is empty. Otherwise as :meth:`add_samples`.
        """
        iterator = iter(samples)
        try:
            label, image = next(iterator)
        except StopIteration:
            raise ValueError("no samples to add") from None
        rest = ((each_label, each_image, None) for each_label, each_image in iterator)
        return self._add_samples(model, label, itertools.chain([(label, image, None)], rest), keep_classes, timeout)

    def _add_samples(self, model: str, label: str, samples: Iterable[Tuple[str, Any, Any]], keep_classes: bool,
                     timeout: Optional[float]) -> AddedSamples:
        """One AddSamples call over ``(label, image, embedding)`` triples; a label is sent when it changes.

        A failure while reading ``samples`` cancels the call rather than half-closing it: a
        half-close would tell the daemon the samples sent so far are all of them, and it would
        store that part.
        """
        failure: List[BaseException] = []
        call_made = threading.Event()
        calls: List[Any] = []
        shared = InFlight()  # the SharedFrames sent: their slots are freed when the call has ended

        def requests() -> Iterator[pb.AddSamplesRequest]:
            yield pb.AddSamplesRequest(model=model, label=label, keep_classes=keep_classes)
            current = label
            try:
                for sample_label, image, vector in samples:
                    message = pb.AddSamplesRequest()
                    if sample_label != current:
                        message.label = current = sample_label
                    if image is not None:
                        if isinstance(image, SharedFrame) and not shared.sent(image):
                            return  # the call has ended meanwhile: this one was freed, not sent
                        convert.fill_image(message.image, image)
                    else:
                        message.embedding.CopyFrom(convert.embedding(vector))
                    yield message
            except Exception as exc:  # noqa: BLE001 - the caller's own error, raised to the caller below
                failure.append(exc)
                call_made.wait()
                calls[0].cancel()

        call = self._learning.AddSamples.future(requests(), timeout=self._timeout(timeout))
        calls.append(call)
        call_made.set()
        try:
            reply = call.result()
        except (grpc.FutureCancelledError, grpc.RpcError) as exc:
            if failure:
                raise failure[0] from None
            if isinstance(exc, grpc.RpcError):
                raise _client_error(exc, self.address) from None
            raise ClientError(grpc.StatusCode.CANCELLED, "adding samples was cancelled") from None
        except BaseException:  # Ctrl-C while waiting: stop the call, so nothing is stored
            call.cancel()
            raise
        finally:
            shared.close()
        return convert.added_samples(reply)

    @_wrap_errors
    def classes(self, model: str, timeout: Optional[float] = None) -> LearnedModel:
        """The classes ``model`` serves now. Raises: ClientError (NOT_FOUND, ...)."""
        reply = self._learning.ListClasses(pb.ListClassesRequest(model=model), timeout=self._timeout(timeout))
        return convert.learned_model(reply.model)

    @_wrap_errors
    def remove_class(self, model: str, label: str, timeout: Optional[float] = None) -> LearnedModel:
        """Remove a class and its samples; the head without it serves as a new version.

        Raises:
            ClientError: NOT_FOUND when the model has no such class.
        """
        reply = self._learning.RemoveClass(pb.RemoveClassRequest(model=model, label=label),
                                           timeout=self._timeout(timeout))
        return convert.learned_model(reply.model)

    @_wrap_errors
    def train(self, model: str, epochs: Optional[int] = None, learning_rate: Optional[float] = None,
              batch_size: Optional[int] = None, l2: Optional[float] = None,
              validation_fraction: Optional[float] = None, seed: Optional[int] = None, warm_start: bool = False,
              timeout: Optional[float] = None) -> "TrainRun":
        """Train the head by last-layer backpropagation over every stored sample of ``model``.

        Returns an iterator of :class:`TrainProgress`, one per epoch; the last carries the new
        head in ``model``. ``cancel()`` on it (or ``close()``, or leaving its ``with`` block)
        stops training and the head that served before keeps serving. None means the daemon's
        default, for every number (so does 0: the protocol cannot ask for no L2 or no
        validation split). ``timeout`` bounds the whole run (default: none).

        Raises:
            ValueError: a number out of range (before anything is sent).
            ClientError: while iterating: NOT_FOUND, FAILED_PRECONDITION (one class, no samples), ...
        """
        request = pb.TrainRequest(model=model, epochs=_check_count("epochs", epochs),
                                  learning_rate=_check_real("learning_rate", learning_rate, above=0.0),
                                  batch_size=_check_count("batch_size", batch_size),
                                  l2=_check_real("l2", l2, at_least=0.0),
                                  validation_fraction=_check_fraction(validation_fraction),
                                  warm_start=warm_start)
        if seed is not None:
            if not 0 <= seed < 2 ** 64:
                raise ValueError(f"seed must be an integer in [0, 2**64), got {seed!r}")
            request.seed = seed
        return TrainRun(self._learning.Train(request, timeout=timeout), self.address)

    @_wrap_errors
    def export(self, model: str, target: str = "cpu", on_progress: Optional[Callable[[int, int], None]] = None,
               timeout: Optional[float] = None) -> ExportResult:
        """A .tflite of ``model`` with its head that runs without edgetpud.

        ``target`` "cpu" is the CPU twin; "edgetpu" the compiled base with the head after its
        ``edgetpu-custom-op``. ``on_progress(received, size)`` is called per chunk (for a
        progress bar).

        Raises:
            ClientError: FAILED_PRECONDITION (no head, no compiled twin, training running), or
                DATA_LOSS when the bytes received do not add up to the header's size.
        """
        call = self._learning.Export(pb.ExportRequest(model=model, target=target), timeout=self._timeout(timeout))
        header: Optional[pb.ExportHeader] = None
        parts: List[bytes] = []
        received = 0
        try:
            for chunk in call:
                kind = chunk.WhichOneof("chunk")
                if kind == "header":
                    if header is not None:
                        raise ClientError(grpc.StatusCode.DATA_LOSS, "the export sent a second header")
                    header = chunk.header
                    if on_progress is not None:
                        on_progress(0, header.size)
                elif kind == "data":
                    if header is None:
                        raise ClientError(grpc.StatusCode.DATA_LOSS, "the export sent data before its header")
                    parts.append(chunk.data)
                    received += len(chunk.data)
                    if received > header.size:
                        raise ClientError(grpc.StatusCode.DATA_LOSS,
                                          f"the export sent more than the {header.size} bytes its header announced")
                    if on_progress is not None:
                        on_progress(received, header.size)
        finally:
            call.cancel()
        if header is None:
            raise ClientError(grpc.StatusCode.DATA_LOSS, "the export ended without a header")
        if received != header.size:
            raise ClientError(grpc.StatusCode.DATA_LOSS,
                              f"the export ended after {received} of the {header.size} bytes its header announced")
        return convert.export_result(header, b"".join(parts))

    @_wrap_errors
    def heads(self, model: str, timeout: Optional[float] = None) -> List[HeadVersion]:
        """Every stored head version of ``model``, oldest first as the daemon lists them. Raises: ClientError."""
        reply = self._learning.ListHeads(pb.ListHeadsRequest(model=model), timeout=self._timeout(timeout))
        return [convert.head_version(h) for h in reply.heads]

    @_wrap_errors
    def restore_head(self, model: str, head_version: int, timeout: Optional[float] = None) -> LearnedModel:
        """Serve an earlier head version again (the daemon makes it a new model version).

        Raises:
            ClientError: NOT_FOUND when there is no such head version.
        """
        request = pb.RestoreHeadRequest(model=model, head_version=head_version)
        return convert.learned_model(self._learning.RestoreHead(request, timeout=self._timeout(timeout)))

    # ------------------------------------------------------------ models, devices, status

    @_wrap_errors
    def models(self, timeout: Optional[float] = None) -> List[Model]:
        reply = self._models.List(pb.ListModelsRequest(), timeout=self._timeout(timeout))
        return [convert.model(m) for m in reply.models]

    @_wrap_errors
    def model_info(self, name: str, timeout: Optional[float] = None) -> Model:
        """The model's state, tensors and Edge TPU compatibility report. Raises: ClientError (NOT_FOUND)."""
        return convert.model(self._models.Info(pb.ModelInfoRequest(name=name), timeout=self._timeout(timeout)))

    @_wrap_errors
    def load_model(self, name: str, path: Union[str, Path, None] = None, data: Optional[bytes] = None,
                   timeout: Optional[float] = None, labels: Optional[bytes] = None) -> Model:
        """Load or replace a model from a path on the daemon's host, or upload ``data`` (.tflite bytes).

        ``labels``, a labels file's bytes (read on this host), replace the bundle's own; an
        upload's are kept beside it by the daemon.

        Raises:
            ClientError: FAILED_PRECONDITION when the model or its labels cannot be loaded, with the reason.
        """
        if data is None:
            if path is None:
                raise ValueError("load_model needs a path (on the daemon's host) or data to upload")
            request = pb.LoadModelRequest(name=name, path=str(path), labels=labels)
            return convert.model(self._models.Load(request, timeout=self._timeout(timeout)))

        def chunks() -> Iterator[pb.UploadModelChunk]:
            yield pb.UploadModelChunk(name=name)
            if labels is not None:
                yield pb.UploadModelChunk(labels=labels)
            for start in range(0, len(data), UPLOAD_CHUNK_BYTES):
                yield pb.UploadModelChunk(data=data[start:start + UPLOAD_CHUNK_BYTES])
        return convert.model(self._models.Upload(chunks(), timeout=self._timeout(timeout)))

    @_wrap_errors
    def unload_model(self, name: str, timeout: Optional[float] = None) -> None:
        self._models.Unload(pb.UnloadModelRequest(name=name), timeout=self._timeout(timeout))

    @_wrap_errors
    def devices(self, timeout: Optional[float] = None) -> List[Device]:
        reply = self._devices.List(pb.ListDevicesRequest(), timeout=self._timeout(timeout))
        return [convert.device(d) for d in reply.devices]

    @_wrap_errors
    def status(self, timeout: Optional[float] = None) -> Status:
        return convert.status(self._daemon.Status(pb.StatusRequest(), timeout=self._timeout(timeout)))

    @_wrap_errors
    def wait_ready(self, timeout: float = 30.0) -> Status:
        """Block until the daemon answers and reports ready.

        Raises:
            ClientError: DEADLINE_EXCEEDED when it is not ready within ``timeout``.
        """
        end = time.monotonic() + timeout
        last: Optional[str] = None
        while True:
            remaining = end - time.monotonic()
            try:
                grpc.channel_ready_future(self._channel).result(timeout=max(0.01, remaining))
                status = convert.status(self._daemon.Status(pb.StatusRequest(), timeout=max(0.01, remaining)))
                if status.ready:
                    return status
                last = "the daemon answers but is not ready"
            except (grpc.FutureTimeoutError, grpc.RpcError) as exc:
                last = str(getattr(exc, "details", lambda: "")() or "no answer")
            if time.monotonic() >= end:
                raise ClientError(grpc.StatusCode.DEADLINE_EXCEEDED,
                                  f"daemon at {self.address} not ready after {timeout:.0f} s ({last})")
            time.sleep(0.1)


class TrainRun:
    """The progress of one Train call: iterate it for :class:`TrainProgress`, one per epoch.

    The last item carries the new head, whether the daemon sends it with the last epoch or in
    a message of its own after it (then the item repeats that epoch's figures with the head).

    ``cancel()`` (or ``close()``, or leaving a ``with`` block) stops the training on the daemon,
    which keeps the head that served before; iteration then simply ends. ``model`` is the new
    head once the last item arrived.
    """

    def __init__(self, call: Any, address: str = "") -> None:
        self._call = call
        self._address = address
        self._cancelled = False
        self._last: Optional[TrainProgress] = None
        self.model: Optional[LearnedModel] = None

    def __iter__(self) -> "TrainRun":
        return self

    def __next__(self) -> TrainProgress:
        if self._cancelled:
            raise StopIteration
        try:
            message = next(self._call)
        except StopIteration:
            raise
        except grpc.RpcError as exc:
            if self._cancelled:
                raise StopIteration from None
            raise _client_error(exc, self._address) from None
        progress = convert.train_progress(message)
        if progress.model is not None:
            self.model = progress.model
            if progress.epoch == 0 and self._last is not None:
                # the head in a message of its own: it belongs with the last epoch's figures
                progress = dataclasses.replace(self._last, model=progress.model)
        self._last = progress
        return progress

    def cancel(self) -> None:
        """Stop training (a no-op once it finished)."""
        self._cancelled = True
        self._call.cancel()

    close = cancel

    def __enter__(self) -> "TrainRun":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.cancel()


def _check_count(name: str, value: Optional[int]) -> int:
    """A positive count, or 0 (the daemon's default) for None."""
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or value < 1 or value >= 2 ** 32:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


def _check_real(name: str, value: Optional[float], above: Optional[float] = None,
                at_least: Optional[float] = None) -> float:
    """A finite number in range, or 0.0 (the daemon's default) for None."""
    if value is None:
        return 0.0
    number = float(value)
    if not math.isfinite(number) or (above is not None and number <= above) or \
            (at_least is not None and number < at_least):
        bound = f"> {above:g}" if above is not None else f">= {at_least:g}"
        raise ValueError(f"{name} must be a finite number {bound}, got {value!r}")
    return number


def _check_fraction(value: Optional[float]) -> float:
    if value is None:
        return 0.0
    number = float(value)
    if not (math.isfinite(number) and 0.0 <= number < 1.0):
        raise ValueError(f"validation_fraction must be in [0, 1), got {value!r}")
    return number


def _code(value: int) -> grpc.StatusCode:
    for code in grpc.StatusCode:
        if code.value[0] == value:
            return code
    return grpc.StatusCode.UNKNOWN


def _pem(value: Union[bytes, str, Path, None]) -> Optional[bytes]:
    if value is None or isinstance(value, bytes):
        return value
    return Path(value).read_bytes()
