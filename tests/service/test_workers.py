"""Two API workers (SOUNDARC_WORKERS=2, the default on a 2-core CPU): both serve, and a class enrolled
through one is answered by the other (the class store is shared through its file)."""

from concurrent.futures import ThreadPoolExecutor

import requests

from tests.service.conftest import start_server, stop_server


def test_two_workers_serve_and_share_enrolled_classes(test_artifact, fixtures, tmp_path):
    clip = (fixtures / "1-27724-A-1.ogg").read_bytes()
    proc, url = start_server(test_artifact, {"SOUNDARC_WORKERS": "2", "SOUNDARC_CLASSES": str(tmp_path / "enrolled.json")},
                             tmp_path / "server.log")
    try:
        # a lenient margin: the random model's embeddings lie within a few degrees, and its clip is a built-in
        # prototype too, so at the model's margin the class would win no window of it
        r = requests.post(f"{url}/classes", data={"label": "my rooster", "margin": "-0.5"},
                          files=[("audio", ("a.ogg", clip))], timeout=60)
        assert r.status_code == 201, r.text

        def classify_and_stats(_):  # a new connection each time: either worker may take it
            answer = requests.post(f"{url}/classify", files={"audio": ("a.ogg", clip)}, timeout=60).json()
            stats = requests.get(f"{url}/stats", timeout=10).json()
            return answer["label"], stats["worker_pid"], stats["workers"]

        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(classify_and_stats, range(48)))
    finally:
        stop_server(proc)
    assert {label for label, _, _ in results} == {"my rooster"}  # the enrolled class wins on its own clip
    assert {workers for _, _, workers in results} == {2}
    assert len({pid for _, pid, _ in results}) == 2  # both workers answered
