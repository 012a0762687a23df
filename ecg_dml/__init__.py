__version__ = "0.0.1"
# Hand-written below this line (nbdev only updates `__version__`): the lazy public surface of the subpackages.

def _lazy_exports(package:str, table:dict) -> tuple[list, object, object]:
    """`(__all__, __getattr__, __dir__)` for a package whose public names live in its submodules (`table`: submodule
    -> names) and are imported on first use (PEP 562): `import ecg_dml.data` costs nothing, `from ecg_dml.data import
    open_ecgs` imports `ecg_dml.data.sources` (and what it needs) only"""
    import sys
    from importlib import import_module
    where = {name: mod for mod, names in table.items() for name in names}
    def __getattr__(name:str):
        if name not in where: raise AttributeError(f'module {package!r} has no attribute {name!r}')
        value = getattr(import_module(f'{package}.{where[name]}'), name)
        setattr(sys.modules[package], name, value)
        return value
    def __dir__(): return sorted({*vars(sys.modules[package]), *where})
    return list(where), __getattr__, __dir__
