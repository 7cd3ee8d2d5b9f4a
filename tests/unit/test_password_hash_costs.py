"""The argon2id costs of new password hashes are settings (vcenter.core.settings
password_hash_*): production keeps argon2-cffi's defaults, tests lower them
(tests/conftest.py), and a stored hash verifies whatever the costs are now."""

from __future__ import annotations

from argon2 import PasswordHasher

from vcenter.core.settings import Settings
from vcenter.services.access.auth import _hasher


def test_the_defaults_are_argon2_cffis():
    default = PasswordHasher()
    fields = Settings.model_fields
    assert (fields["password_hash_time_cost"].default, fields["password_hash_memory_cost"].default, fields["password_hash_parallelism"].default) == (
        default.time_cost,
        default.memory_cost,
        default.parallelism,
    )


def test_a_hash_carries_the_settings_costs_and_verifies_under_other_costs():
    cheap = Settings(password_hash_time_cost=1, password_hash_memory_cost=8, password_hash_parallelism=1)
    hasher, dummy = _hasher(cheap)
    stored = hasher.hash("a-long-pass-phrase")
    assert stored.startswith("$argon2id$v=19$m=8,t=1,p=1$") and dummy.startswith("$argon2id$v=19$m=8,t=1,p=1$")
    other, _ = _hasher(Settings(password_hash_time_cost=2, password_hash_memory_cost=16, password_hash_parallelism=2))
    assert other.verify(stored, "a-long-pass-phrase")
