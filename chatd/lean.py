"""An open connection's Autobahn state, kept lean.

Autobahn gives every connection some 75 instance attributes, most of them flags and slots that
hold None, False or 0 for the whole life of a healthy connection, plus what it kept of the
opening handshake (for its test suite and debug lines). At 75 keys an attribute dict is 1.6 KiB,
a fifth of what an idle connection costs (bench d). Once a connection is open, `compact` drops
the handshake's leftovers and every attribute that still holds the value it has at open on
nearly every connection; those values live on the listener's protocol class instead
(`CLASS_VALUES`, set there by `ChatServerFactory`), so reading one gives the same value, and
Autobahn setting one (a close code, a timer) makes it the connection's own again.
"""

from __future__ import annotations

# Attributes Autobahn sets on every server connection, with the value each holds once the
# connection is open (values compared by identity: None, booleans, small ints, "").
AT_OPEN: dict[str, object] = {
    "_perMessageCompress": None,
    "trackedTimings": None,
    "send_state": 0,  # SEND_STATE_GROUND
    "triggered": False,
    "wasMaxFramePayloadSizeExceeded": False,
    "wasMaxMessagePayloadSizeExceeded": False,
    "closedByMe": False,
    "failedByMe": False,
    "droppedByMe": False,
    "wasClean": False,
    "wasNotCleanReason": None,
    "wasServerConnectionDropTimeout": False,
    "wasOpenHandshakeTimeout": False,
    "wasCloseHandshakeTimeout": False,
    "wasServingFlashSocketPolicyFile": False,
    "localCloseCode": None,
    "localCloseReason": None,
    "remoteCloseCode": None,
    "remoteCloseReason": None,
    "openHandshakeTimeoutCall": None,
    "closeHandshakeTimeoutCall": None,
    "autoPingTimeoutCall": None,
    "autoPingPending": None,
    "autoPingPendingCall": None,
    "autoPingPendingSeq": 0,
    "autoPingPendingSent": None,
    "websocket_version": 13,
    "websocket_origin": "",
    "websocket_protocol_in_use": None,
    "inside_message": False,
    "current_frame": None,
    "_isMessageCompressed": False,
    "message_is_binary": False,
    "message_data": None,
    "frame_data": None,
    "send_queue": (),  # chatd's connectionMade replaces Autobahn's deque (protocol.py)
}
# Dropped whatever they hold (their class value is None): what the opening handshake left,
# read by nothing once the connection is open; Autobahn's event observers
# (`on("message", ...)`), which only its own default onMessage fires (chatd's replaces it).
LEFTOVERS = (
    "http_headers",
    "http_request_data",
    "http_response_data",
    "http_status_line",
    "http_request_uri",
    "http_request_path",
    "http_request_params",
    "http_request_host",
    "_wskey",
    "websocket_extensions",
    "websocket_protocols",
    "_valid_events",
    "_results",
    # WAMP's record of the transport (chatd's connectionMade does not fill it in).
    "_transport_details",
)
CLASS_VALUES = AT_OPEN | dict.fromkeys(LEFTOVERS)


def compact(protocol) -> None:
    """Drop this open connection's leftovers and what `AT_OPEN` holds for it, and give it a
    dict its size. Its class must hold `CLASS_VALUES`."""
    attributes = protocol.__dict__
    for name in LEFTOVERS:
        attributes.pop(name, None)
    for name, value in AT_OPEN.items():
        if attributes.get(name, attributes) is value:
            del attributes[name]
    settle(protocol)


def settle(instance) -> None:
    """Give `instance` an attribute dict sized for what it holds. A dict never shrinks as keys
    go, and grows past its size while attributes come and go: Twisted's TCP transport's is 832
    bytes once a connection is set up, 464 rebuilt."""
    instance.__dict__ = dict(instance.__dict__)
