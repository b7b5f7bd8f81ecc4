"""MetalLB, as an add-on of the bare-metal profile (``cloud: none``): its objects' rules
(services/validation/metallb.py), its controller's address assignment (``ipam``) and
its speakers' decision of which node announces an address (``speaker``). The speakers
themselves (membership through the network, gratuitous ARP) run on the machine:
topo/metallb.py; the ARP answers they stand for are flows (controller/pipeline/).
"""
