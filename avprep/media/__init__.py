"""Media I/O through the ffmpeg binary: probing, chunked frame decoding, audio decoding."""
