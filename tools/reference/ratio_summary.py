"""Prints the medians of two lists of timings (C++ and Python) and their ratio.

  ratio_summary.py LABEL "CPP_MS ..." "PY_MS ..."
"""
import statistics
import sys

label, cpp, py = sys.argv[1], [float(v) for v in sys.argv[2].split()], [float(v) for v in sys.argv[3].split()]
c, p = statistics.median(cpp), statistics.median(py)
print(f"{label}: C++ {c:.1f} ms, Python {p:.1f} ms (medians of {len(cpp)} rounds), ratio C++/Python {c / p:.3f}")
