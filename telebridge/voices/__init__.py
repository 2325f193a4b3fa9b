"""Named voices: the voices file, cloned voices, and Piper "cloning" by pitch and pace matching."""

from .store import CLONED_PREFIX, UnknownVoice, VoiceEntry, VoiceFileError, VoiceStore, load_voices_file

__all__ = ["CLONED_PREFIX", "UnknownVoice", "VoiceEntry", "VoiceFileError", "VoiceStore", "load_voices_file"]
