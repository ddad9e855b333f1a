"""Orthanc with its DICOMweb plugin (Debian packages), started on loopback with fixed ports."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import requests

PLUGIN_DIRS = [Path("/usr/share/orthanc/plugins"), Path("/usr/lib/orthanc/plugins")]


class Orthanc:
    def __init__(
        self,
        workdir: Path,
        http_port: int,
        dicom_port: int,
        modalities: dict[str, tuple[str, str, int]] | None = None,
        lua_scripts: list[Path] | None = None,
    ) -> None:
        self.workdir = workdir
        self.http_port = http_port
        self.dicom_port = dicom_port
        # "DicomModalities": name -> (AE title, host, port); a listed AE may C-FIND/C-MOVE/C-GET and be a
        # C-MOVE destination (Orthanc allows every DIMSE service to a listed modality by default)
        self.modalities = modalities or {}
        # "LuaScripts": run at start; their callbacks (e.g. OnStoredInstance) are Orthanc's own routing
        self.lua_scripts = lua_scripts or []
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def dicomweb(self) -> str:
        return self.url + "/dicom-web"

    def _config(self, storage: Path) -> Path:
        plugins = [str(p) for d in PLUGIN_DIRS if d.exists() for p in d.glob("libOrthancDicomWeb*.so")]
        config = {
            "Name": "bench",
            "StorageDirectory": str(storage),
            "IndexDirectory": str(storage),
            "HttpPort": self.http_port,
            "DicomPort": self.dicom_port,
            "DicomAet": "ORTHANC",
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "HttpServerEnabled": True,
            "DicomServerEnabled": True,
            "StorageCompression": False,
            "Plugins": plugins,
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": True, "Host": "127.0.0.1"},
            "UnknownSopClassAccepted": True,
            "ConcurrentJobs": 2,
            "HttpThreadsCount": 50,
        }
        if self.modalities:
            config["DicomModalities"] = {name: list(entry) for name, entry in self.modalities.items()}
        if self.lua_scripts:
            config["LuaScripts"] = [str(p) for p in self.lua_scripts]
        path = self.workdir / "orthanc.json"
        path.write_text(json.dumps(config))
        return path

    def start(self, fresh: bool = True) -> None:
        storage = self.workdir / "storage"
        if fresh and storage.exists():
            subprocess.run(["rm", "-rf", str(storage)], check=True)
        storage.mkdir(parents=True, exist_ok=True)
        log = open(self.workdir / "orthanc.log", "ab")
        # dcmtk inside Orthanc reads TCP_NODELAY like dcmsend and storescp do: same treatment for all
        self.process = subprocess.Popen(
            ["Orthanc", str(self._config(storage))], stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "TCP_NODELAY": "1"}
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if requests.get(self.url + "/system", timeout=1).ok:
                    return
            except requests.RequestException:
                time.sleep(0.2)
        raise RuntimeError(f"Orthanc did not start; see {self.workdir / 'orthanc.log'}")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
            self.process = None
