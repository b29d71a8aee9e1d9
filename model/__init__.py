"""Model: tokenizers, the audio-visual masked transformer, sampler, vocoder, training."""
