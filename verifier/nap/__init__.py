"""Activation-pattern specifications (NAPs): mining, verification with certificates, non-ambiguity."""
from verifier.nap.pattern import Nap, NapError, load_naps, mine, save_naps
from verifier.nap.verify import check_certificate, non_ambiguity, verify_nap, verify_naps

__all__ = ["Nap", "NapError", "check_certificate", "load_naps", "mine", "non_ambiguity", "save_naps", "verify_nap",
           "verify_naps"]
