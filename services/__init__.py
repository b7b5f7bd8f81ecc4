#: The garbage collector's thresholds of the lab's long-running processes (the daemon,
#: the controller): their heaps hold millions of small objects at 10,000 Services, which
#: Python's defaults (700, 10, 10) scan again and again; these halve the time to apply
#: and program 10,000 Services (issue 20).
GC_THRESHOLDS = (100_000, 50, 100)
