"""Audio that arrives in pieces -> the windows `core.clip.prepare` makes of the whole clip, each as
soon as it is final.

    push(samples)  (n, channels) float32 at the stream's rate -> mono -> resampled (soxr, streaming)
                   -> 5 s segments, each analysed on its own as the front-end does (a segment is final
                   once the audio after it is at least one window long, so that no short tail can
                   join it) -> log-mel frames, frame levels, active frames
                   -> every window (1 s, hop 0.5 s) whose frames are all final
    end()          the last segment (with its short tail), the windows left, the end-aligned last one

The numbers are those of the upload path for the same audio, up to the streaming resampler (soxr's
streaming and one-shot outputs differ by a few 1e-5 at most). Memory is bounded: frames are kept
only until no future window needs them; levels (one float per 10 ms) for the events. Torch-free.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from core.activity import ActivityConfig, window_activity
from core.audio import checked, mix_down, resampler
from core.clip import analyse
from core.features import FrontendConfig, frame_seconds, patch_starts, tile_to_patch

MAX_PENDING = 256  # pieces kept apart at most: one copy of the buffer per 256 (not each), bounded memory per stream


@dataclass
class StreamWindows:
    patches: np.ndarray  # (N, T, M)
    starts_s: np.ndarray  # (N,)
    active: np.ndarray  # (N,) bool


class StreamFrontend:
    def __init__(self, sample_rate: int, frontend: FrontendConfig, activity: ActivityConfig = ActivityConfig()):
        self.frontend, self.activity = frontend, activity
        self.to_target = resampler(sample_rate, frontend.sample_rate)  # (n,) -> (n'), None at the end
        self.audio = np.zeros(0, np.float32)  # resampled samples not yet in a final segment ...
        self.pending: list[np.ndarray] = []  # ... and those after them, joined once a segment can be final
        self.pending_size = 0
        self.frames = np.zeros((0, frontend.n_mels), np.float32)  # final frames from frame `first` on
        self.frame_active = np.zeros(0, bool)
        self.first = 0  # global index of self.frames[0]
        self.total_frames = 0  # final frames so far
        self.levels: list[np.ndarray] = []  # every final frame's level (dB), for events
        self.next_start = 0  # global start frame of the next regular window (every eval_hop_frames)
        self.last_start = -1  # global start frame of the last window emitted
        self.samples = 0  # resampled samples received

    @property
    def duration_s(self) -> float:
        return self.samples / self.frontend.sample_rate

    def push(self, samples: np.ndarray) -> StreamWindows:
        """(n, channels) float32 -> the windows that became final."""
        mono = mix_down(samples) if samples.ndim == 2 else samples.astype(np.float32)
        self._add(self.to_target(checked(mono)))
        fe = self.frontend
        final_at = fe.segment_samples + fe.patch_frames * fe.hop_length  # samples that make a segment final
        if self.audio.size + self.pending_size < final_at:
            return self._windows(self.total_frames)  # tiny pieces: no copy of what is buffered each
        self._join()
        while self.audio.size >= final_at:
            self._final_segment(self.audio[: fe.segment_samples])
            self.audio = self.audio[fe.segment_samples:]
        return self._windows(self.total_frames)

    def end(self) -> StreamWindows:
        """The rest of the stream: its last segment and every window not emitted yet."""
        self._add(self.to_target(None))  # a resampler gives its last samples only now
        self._join()
        if self.audio.size:
            self._final_segment(self.audio)
            self.audio = self.audio[:0]
        if self.total_frames == 0:
            return StreamWindows(np.zeros((0, self.frontend.patch_frames, self.frontend.n_mels), np.float32),
                                 np.zeros(0), np.zeros(0, bool))
        return self._windows(self.total_frames, last=True)

    def _add(self, resampled: np.ndarray) -> None:
        self.pending.append(resampled.astype(np.float32))
        self.pending_size += resampled.size
        self.samples += resampled.size
        if len(self.pending) >= MAX_PENDING:
            self._join()

    def _join(self) -> None:
        self.audio = np.concatenate([self.audio, *self.pending])
        self.pending, self.pending_size = [], 0

    def _final_segment(self, y: np.ndarray) -> None:
        logmel, levels, active = analyse(y, self.frontend, self.activity)  # one segment: y is at most a segment and a short tail
        self.frames = np.concatenate([self.frames, logmel])
        self.frame_active = np.concatenate([self.frame_active, active])
        self.levels.append(levels)
        self.total_frames += len(logmel)

    def _windows(self, final_frames: int, last: bool = False) -> StreamWindows:
        fe = self.frontend
        if last:  # as the upload path: every hop, then one aligned to the end
            starts = patch_starts(max(final_frames, fe.patch_frames), fe)
            starts = starts[starts > self.last_start]
        else:
            starts = np.arange(self.next_start, final_frames - fe.patch_frames + 1, fe.eval_hop_frames)
        frames = tile_to_patch(self.frames, fe) if last and final_frames < fe.patch_frames else self.frames
        local = starts - self.first
        patches = np.stack([frames[s:s + fe.patch_frames] for s in local]) if len(starts) else \
            np.zeros((0, fe.patch_frames, fe.n_mels), np.float32)
        active = window_activity(self.frame_active, local, fe, self.activity)
        if len(starts):
            self.last_start = int(starts[-1])
            self.next_start = self.last_start + fe.eval_hop_frames
            keep = self.last_start + 1 - self.first  # no later window, not even the end-aligned one, starts before
            if not last and keep > 0:
                self.frames, self.frame_active = self.frames[keep:], self.frame_active[keep:]
                self.first += keep
        return StreamWindows(np.ascontiguousarray(patches, dtype=np.float32), frame_seconds(starts, fe), active)

    def all_levels(self) -> np.ndarray:
        return np.concatenate(self.levels) if self.levels else np.zeros(0)
