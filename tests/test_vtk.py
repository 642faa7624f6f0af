"""The VTK export opened by VTK's own legacy reader, as ParaView opens it."""
import numpy as np
import pytest

vtk = pytest.importorskip("vtk")
from vtk.util.numpy_support import vtk_to_numpy

import landscape_nb as lnb
from landscape_nb.surface import Surface


def make_surface(nx, ny, seed=0, missing=()):
    rng = np.random.default_rng(seed)
    x = np.sort(rng.uniform(-1, 1, nx))  # uneven spacing: points must come from x, not a formula
    y = None if ny is None else np.sort(rng.uniform(-2, 0.5, ny))
    shape = (nx,) if ny is None else (ny, nx)
    loss = rng.uniform(0.1, 3.0, shape)
    acc = rng.uniform(0, 1, shape)
    done = np.ones(shape, dtype=bool)
    for idx in missing:
        done[idx], loss[idx], acc[idx] = False, np.nan, np.nan
    return Surface(x=x, y=y, loss=loss, metrics={"accuracy": acc}, done=done)


def read(path):
    reader = vtk.vtkStructuredGridReader()
    reader.SetFileName(str(path))
    reader.ReadAllScalarsOn()
    reader.Update()
    grid = reader.GetOutput()
    assert isinstance(grid, vtk.vtkStructuredGrid)
    arrays = {grid.GetPointData().GetArrayName(k): vtk_to_numpy(grid.GetPointData().GetArray(k))
              for k in range(grid.GetPointData().GetNumberOfArrays())}
    return grid, arrays


def dims(grid):
    out = [0, 0, 0]
    grid.GetDimensions(out)
    return tuple(out)


@pytest.mark.parametrize("nx,ny", [(5, 5), (7, 4), (3, 6)])
def test_vtk_reader_sees_the_plane_points_quads_and_values(tmp_path, nx, ny):
    surf = make_surface(nx, ny, seed=nx * 10 + ny, missing=[(1, 2)])
    grid, arrays = read(lnb.export_vtk(surf, tmp_path / "s.vtk"))

    assert dims(grid) == (nx, ny, 1)
    assert grid.GetNumberOfPoints() == nx * ny
    fill = np.nanmax(surf.loss)  # the documented default for a missing height: the finite maximum
    for j in range(ny):
        for i in range(nx):
            pid = vtk.vtkStructuredData.ComputePointId((nx, ny, 1), (i, j, 0))
            expected_z = surf.loss[j, i] if surf.done[j, i] else fill
            np.testing.assert_array_equal(grid.GetPoint(pid), (surf.x[i], surf.y[j], expected_z))
            assert arrays["valid"][pid] == float(surf.done[j, i])
            assert arrays["loss"][pid] == expected_z
            assert arrays["height"][pid] == expected_z
            expected_acc = surf.metrics["accuracy"][j, i] if surf.done[j, i] else np.nanmax(surf.metrics["accuracy"])
            assert arrays["accuracy"][pid] == expected_acc

    assert grid.GetNumberOfCells() == (nx - 1) * (ny - 1)
    for j in range(ny - 1):
        for i in range(nx - 1):
            cell = grid.GetCell(vtk.vtkStructuredData.ComputeCellId((nx, ny, 1), (i, j, 0)))
            assert cell.GetCellType() == vtk.VTK_QUAD
            ids = {cell.GetPointId(k) for k in range(cell.GetNumberOfPoints())}
            corners = {(j + dj) * nx + (i + di) for dj in (0, 1) for di in (0, 1)}
            assert ids == corners
            bounds = cell.GetBounds()
            assert bounds[:4] == (surf.x[i], surf.x[i + 1], surf.y[j], surf.y[j + 1])

    # ParaView's habit for missing points: Threshold on "valid" drops every cell touching them
    threshold = vtk.vtkThreshold()
    threshold.SetInputData(grid)
    threshold.SetInputArrayToProcess(0, 0, 0, vtk.vtkDataObject.FIELD_ASSOCIATION_POINTS, "valid")
    threshold.SetLowerThreshold(0.5)
    threshold.SetUpperThreshold(1.5)
    threshold.SetThresholdFunction(vtk.vtkThreshold.THRESHOLD_BETWEEN)
    threshold.Update()
    j0, i0 = 1, 2
    touching = sum(1 for j in (j0 - 1, j0) for i in (i0 - 1, i0) if 0 <= j < ny - 1 and 0 <= i < nx - 1)
    assert threshold.GetOutput().GetNumberOfCells() == (nx - 1) * (ny - 1) - touching


def test_vtk_reader_sees_a_line_as_a_row_of_segments(tmp_path):
    surf = make_surface(9, None, seed=3)
    grid, arrays = read(lnb.export_vtk(surf, tmp_path / "line.vtk", name="accuracy"))
    assert dims(grid) == (9, 1, 1)
    pts = vtk_to_numpy(grid.GetPoints().GetData())
    np.testing.assert_array_equal(pts, np.column_stack([surf.x, np.zeros(9), surf.metrics["accuracy"]]))
    np.testing.assert_array_equal(arrays["loss"], surf.loss)
    assert grid.GetNumberOfCells() == 8
    for k in range(8):
        cell = grid.GetCell(k)
        assert cell.GetCellType() == vtk.VTK_LINE
        assert [cell.GetPointId(0), cell.GetPointId(1)] == [k, k + 1]


def test_vtk_reader_sees_log_height_and_keeps_raw_loss(tmp_path):
    surf = make_surface(4, 6, seed=7)
    grid, arrays = read(lnb.export_vtk(surf, tmp_path / "log.vtk", log=True))
    pts = vtk_to_numpy(grid.GetPoints().GetData())
    np.testing.assert_allclose(pts[:, 2], np.log10(surf.loss).ravel(), rtol=1e-15)
    np.testing.assert_array_equal(arrays["loss"], surf.loss.ravel())
    np.testing.assert_array_equal(arrays["height"], pts[:, 2])


def test_vtk_reader_sees_a_volume_as_a_3d_grid(tmp_path):
    """A three-direction surface: points (x[i], y[j], z[k]), x fastest, values as scalars."""
    rng = np.random.default_rng(5)
    x, y, z = np.sort(rng.uniform(-1, 1, 4)), np.sort(rng.uniform(-2, 0, 3)), np.sort(rng.uniform(0, 1, 5))
    loss = rng.uniform(0.1, 3.0, (5, 3, 4))
    done = np.ones(loss.shape, bool)
    done[2, 1, 3], loss[2, 1, 3] = False, np.nan
    surf = Surface(x=x, y=y, z=z, loss=loss, metrics={"accuracy": rng.uniform(0, 1, loss.shape)}, done=done)
    grid, arrays = read(lnb.export_vtk(surf, tmp_path / "v.vtk"))
    assert dims(grid) == (4, 3, 5) and grid.GetNumberOfPoints() == loss.size
    fill = np.nanmax(loss)
    for k in range(5):
        for j in range(3):
            for i in range(4):
                pid = vtk.vtkStructuredData.ComputePointId((4, 3, 5), (i, j, k))
                np.testing.assert_array_equal(grid.GetPoint(pid), (x[i], y[j], z[k]))
                want = loss[k, j, i] if done[k, j, i] else fill
                assert arrays["loss"][pid] == want and arrays["height"][pid] == want
                assert arrays["valid"][pid] == float(done[k, j, i])
                assert arrays["accuracy"][pid] == surf.metrics["accuracy"][k, j, i]
