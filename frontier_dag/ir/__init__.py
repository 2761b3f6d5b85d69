"""The IR: EventGraph (one iteration as a node-weighted DAG) and its compiled form."""

from frontier_dag.ir.compile import CompiledStage, compile_stages
from frontier_dag.ir.graph import EventGraph, Resource, Stage, Template
from frontier_dag.ir.symbols import Sym

__all__ = ["CompiledStage", "EventGraph", "Resource", "Stage", "Sym", "Template", "compile_stages"]
