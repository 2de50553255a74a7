"""Speed and scaling benchmark: real-time factors, peak memory, tokens/s and FLOPs per preset.

What is measured (all on this machine's CPU, in one process, one call at a time):

* ``encode``: ``model.encode`` (wave -> tokens), ``decode-1``: ``model.decode`` with one Euler
  step (tokens -> mel -> the model's vocoder -> wave) at the default flow-decoder precision
  (:mod:`entanglecodec.codec.precision`; when that is bfloat16 a ``decode-1 · float32`` row at
  batch 1 gives the reference arithmetic), ``end-to-end``: ``model.reconstruct`` (encode + 1-step
  decode). When the model's vocoder is Griffin-Lim, a
  ``decode-1 · neural vocoder`` row uses a randomly initialised Vocos-style vocoder of the
  shipped size instead (speed does not depend on weights).
* Baselines on the same clips: Codec2 700C and Opus 6 kbps (external processes, encode +
  decode) and the Griffin-Lim mel oracle (wave -> log-mel -> 32 Griffin-Lim iterations), through
  :mod:`entanglecodec.eval.systems`.
* For batch sizes 1 and 8 and lengths from 1 s to 10 min. A length is skipped (and the skip
  recorded) when the previous length of the same series predicts, by linear extrapolation, a
  single call longer than ``max_call_s``.

Timing: ``time.perf_counter`` around one call, after a warm-up call on the shortest length; the
median of ``reps`` calls when a call holds at most 10 s of audio (batch x length), one call beyond. ``RTF = compute seconds / audio
seconds`` (batch 8: divided by 8 x the clip length); below 1 is faster than real time. The
1-minute load average is recorded after every point, and the report checks decode / end-to-end
against the speed targets.

Peak memory: the process's resident-set high-water mark (``VmHWM``) is reset to the current RSS
through ``/proc/self/clear_refs`` before each measurement (after ``gc.collect`` and glibc
``malloc_trim`` so freed memory does not hide new allocations); the reported value is
``VmHWM - RSS before``: every byte the call made resident (torch CPU tensors included, they are
allocated through malloc). Inputs created before the call are not counted. Where the kernel
interface is unavailable a 2 ms RSS sampling thread is used instead (and named in the report).
External codecs run in child processes: their memory is not attributed.

FLOPs: ``torch.utils.flop_counter.FlopCounterMode`` over ``encode`` of 10 s and over one Euler
step of the flow decoder (both classifier-free-guidance passes) on 10 s, for every preset, with
random weights. FFTs (mel analysis, iSTFT, Griffin-Lim) are not counted by the flop counter.

Modules: :mod:`.measure` (peak memory, timed series, flops, memory breakdown, fits), :mod:`.run`
(:func:`~.run.run_bench` over models, systems, lengths and batches), :mod:`.report` (JSON, markdown,
figures through :mod:`entanglecodec.eval.report`), :mod:`.rss` (peak RSS of the ``encode`` process).
"""
