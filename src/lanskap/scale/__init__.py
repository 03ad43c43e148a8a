"""One API over many replicas on Ray Serve (``lanskap serve --replicas N``).

Imported only when a server is scaled out, so a plain ``lanskap serve`` never imports Ray.
:mod:`launch` starts Ray (or joins a cluster) and deploys two things: the ingress
(:mod:`ingress`: the unchanged FastAPI app around a :class:`remote.ScaledService`) and the
generation replicas (:mod:`replica`: each a whole :class:`~lanskap.service.Service` with one Engine
on one GPU). The ingress hands every model job to the replicas through Ray Serve's handle (its
router spreads them, its queue limit answers 503), and a small actor (:mod:`board`) carries
each job's progress back and its interrupt and skip to the replica that runs it.
"""
