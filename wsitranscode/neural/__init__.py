"""Learned (neural) image codecs: bitstream container, models, stain features, coding, training.

Only `bitstream` and `registry` are free of torch; everything else imports torch and compressai
at module level and must be imported lazily (inside functions) by code on the `ls`/`recode` path.
See docs/neural.md.
"""
