"""A WebSocket server that misbehaves after its "ready" message, for the stream client's tests: it stops
reading and never answers ("stall"), drops the connection ("drop"), or closes with code 1008 ("close")."""

import json
import socket
import threading

from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, CloseConnection, Request, TextMessage


def serve(behaviour: str) -> str:
    """Start the server in a daemon thread; its base URL (http://127.0.0.1:PORT)."""
    listener = socket.create_server(("127.0.0.1", 0))
    threading.Thread(target=_one_client, args=(listener, behaviour), daemon=True).start()
    return f"http://127.0.0.1:{listener.getsockname()[1]}"


def _one_client(listener: socket.socket, behaviour: str) -> None:
    conn, _ = listener.accept()
    ws = WSConnection(ConnectionType.SERVER)
    while not any(isinstance(event, Request) for event in _events(ws, conn)):
        pass
    conn.sendall(ws.send(AcceptConnection()))
    conn.sendall(ws.send(TextMessage(json.dumps({"type": "ready"}))))
    if behaviour == "drop":
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")  # close with RST
        conn.close()
        return
    if behaviour == "close":
        conn.sendall(ws.send(CloseConnection(1008, "the stream is longer than the limit")))
    threading.Event().wait()  # the connection stays open, never read again


def _events(ws: WSConnection, conn: socket.socket):
    ws.receive_data(conn.recv(65536))
    return list(ws.events())
